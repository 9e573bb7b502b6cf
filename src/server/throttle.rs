//! Failed-login throttling per source address: each failure from an address doubles the
//! pause before the next failure is answered, up to a cap; 15 quiet minutes reset it. A
//! successful login does not: the pause only ever delays failures, and resetting on success
//! would let an attacker with one valid account clear the record between guesses. Pure
//! apart from the shared map; time is passed in.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Failures older than this no longer count.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// The longest pause.
const MAX_DELAY: Duration = Duration::from_secs(30);
/// Addresses remembered at most; beyond it, stale entries are dropped first.
const MAX_ADDRESSES: usize = 100_000;

/// Recent login failures by client address.
pub(super) struct LoginThrottle {
    base: Duration,
    failures: DashMap<IpAddr, (u32, Instant)>,
}

impl LoginThrottle {
    /// Pauses start at `base` (`listen.auth_failure_delay`).
    pub(super) fn new(base: Duration) -> Self {
        Self {
            base,
            failures: DashMap::new(),
        }
    }

    /// Records a failed login from `ip` at `now`; returns how long to pause before
    /// answering it.
    pub(super) fn failed(&self, ip: IpAddr, now: Instant) -> Duration {
        if self.failures.len() >= MAX_ADDRESSES {
            self.failures
                .retain(|_, (_, last)| now.saturating_duration_since(*last) < FORGET_AFTER);
        }
        let mut entry = self.failures.entry(ip).or_insert((0, now));
        let (count, last) = entry.value_mut();
        if now.saturating_duration_since(*last) >= FORGET_AFTER {
            *count = 0;
        }
        *count = count.saturating_add(1);
        *last = now;
        let doublings = (*count - 1).min(16);
        self.base
            .saturating_mul(1 << doublings)
            .min(MAX_DELAY.max(self.base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_per_address_and_are_forgotten_when_quiet() {
        let t = LoginThrottle::new(Duration::from_millis(500));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(t.failed(a, t0)), 500);
        assert_eq!(ms(t.failed(a, t0)), 1000);
        assert_eq!(ms(t.failed(a, t0)), 2000);
        assert_eq!(ms(t.failed(b, t0)), 500, "other addresses are not affected");
        for _ in 0..20 {
            t.failed(a, t0);
        }
        assert_eq!(t.failed(a, t0), MAX_DELAY, "capped");
        assert_eq!(
            ms(t.failed(a, t0 + FORGET_AFTER)),
            500,
            "forgotten after a quiet period"
        );
    }
}
