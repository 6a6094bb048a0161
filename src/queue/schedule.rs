//! Momentum's retry schedule: after the first failure a message waits `Retry_Interval`, after
//! the second twice that, then four times, and so on, never more than `Max_Retry_Interval`;
//! it is given up after `Max_Retries` retries or once it has waited `Message_Expiration`,
//! whichever comes first.

use crate::model::queue::{MaxRetries, RetryPolicy};
use std::time::{Duration, SystemTime};

/// The wait after the `failures`-th failed attempt (1 for the first).
pub fn delay(p: &RetryPolicy, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(32);
    p.retry_interval
        .checked_mul(1u32 << doublings.min(31))
        .unwrap_or(Duration::MAX)
        .min(p.max_retry_interval)
}

/// How many retries `Max_Retries = auto` allows: as many as the schedule fits into
/// `Message_Expiration`.
pub fn auto_retries(p: &RetryPolicy) -> u32 {
    let mut waited = Duration::ZERO;
    let mut retries = 0;
    while retries < 10_000 {
        waited = waited.saturating_add(delay(p, retries + 1));
        if waited >= p.message_expiration {
            break;
        }
        retries += 1;
    }
    retries
}

/// When a message that arrived at `received` expires.
pub fn deadline(p: &RetryPolicy, received: SystemTime) -> SystemTime {
    received
        .checked_add(p.message_expiration)
        .unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(u32::MAX.into()))
}

/// What follows a failed attempt: the `attempts`-th (1 for the first) of a message that
/// arrived at `received`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Try again then (never later than the expiration, when it is given up unattempted).
    RetryAt(SystemTime),
    /// Retries or time are used up: fail it now.
    GiveUp,
}

pub fn after_failure(
    p: &RetryPolicy,
    attempts: u32,
    received: SystemTime,
    now: SystemTime,
) -> Next {
    let retries_done = attempts.saturating_sub(1);
    let allowed = match p.max_retries {
        MaxRetries::Auto => Some(auto_retries(p)),
        MaxRetries::Unlimited => None,
        MaxRetries::Count(n) => Some(n),
    };
    let end = deadline(p, received);
    if allowed.is_some_and(|n| retries_done >= n) || now >= end {
        return Next::GiveUp;
    }
    let at = now.checked_add(delay(p, attempts)).unwrap_or(end).min(end);
    Next::RetryAt(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(retry: u64, max: u64, retries: MaxRetries, expiration: u64) -> RetryPolicy {
        RetryPolicy {
            retry_interval: Duration::from_secs(retry),
            max_retry_interval: Duration::from_secs(max),
            max_retries: retries,
            message_expiration: Duration::from_secs(expiration),
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn the_interval_doubles_up_to_its_cap() {
        let p = policy(1200, 43_200, MaxRetries::Auto, 86_400);
        let waits: Vec<u64> = (1..=7).map(|n| delay(&p, n).as_secs()).collect();
        assert_eq!(waits, [1200, 2400, 4800, 9600, 19_200, 38_400, 43_200]);
    }

    #[test]
    fn momentums_documented_example_retries_five_times_every_1200_seconds() {
        // Retry_Interval = Max_Retry_Interval = 1200, Max_Retries = 5: given up at 6000 s.
        let p = policy(1200, 1200, MaxRetries::Count(5), 86_400);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut now = t0;
        for attempt in 1..=5 {
            match after_failure(&p, attempt, t0, now) {
                Next::RetryAt(at) => {
                    assert_eq!(at.duration_since(now).unwrap().as_secs(), 1200);
                    now = at;
                }
                Next::GiveUp => panic!("gave up after attempt {attempt}"),
            }
        }
        assert_eq!(now.duration_since(t0).unwrap().as_secs(), 6000);
        assert_eq!(after_failure(&p, 6, t0, now), Next::GiveUp);
    }

    #[test]
    fn auto_fits_the_schedule_into_the_expiration_and_expiration_always_ends_it() {
        // 1200 + 2400 + 4800 + 9600 + 19200 = 37200 < 86400; + 38400 = 75600 < 86400;
        // + 43200 > 86400: six retries.
        let p = policy(1200, 43_200, MaxRetries::Auto, 86_400);
        assert_eq!(auto_retries(&p), 6);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        // No retry is scheduled past the expiration, and at the expiration it is given up.
        let late = t0 + Duration::from_secs(80_000);
        let unlimited = policy(1200, 43_200, MaxRetries::Unlimited, 86_400);
        assert_eq!(
            after_failure(&unlimited, 7, t0, late),
            Next::RetryAt(t0 + Duration::from_secs(86_400))
        );
        assert_eq!(
            after_failure(&unlimited, 8, t0, t0 + Duration::from_secs(86_400)),
            Next::GiveUp
        );
    }
}
