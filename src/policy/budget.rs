//! The hourly row budget (`max_rows_per_hour` in roles.toml): the rows of protected tables
//! each user read in the last hour, shared by all the user's sessions.
//!
//! Counts are kept per minute over a sliding hour. A statement is let through while the
//! user's budget is not spent, and its rows are counted when it ends; its own cap (never
//! more than the budget) bounds how far one statement can carry the hour past it.
//! Pure: the caller passes the time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Minutes in the window.
const MINUTES: usize = 60;

/// The rows read per minute of the last hour: slot `m % 60` holds minute `m`.
#[derive(Debug, Clone, Copy)]
struct Window([(u64, u64); MINUTES]);

impl Window {
    fn spent(&self, minute: u64) -> u64 {
        (self.0.iter())
            .filter(|(m, _)| *m + (MINUTES as u64) > minute)
            .map(|(_, rows)| rows)
            .sum()
    }

    fn add(&mut self, minute: u64, rows: u64) {
        let slot = &mut self.0[(minute % MINUTES as u64) as usize];
        if slot.0 != minute {
            *slot = (minute, 0);
        }
        slot.1 = slot.1.saturating_add(rows);
    }
}

/// Every user's rows in the last hour.
#[derive(Debug)]
pub struct RowBudgets {
    /// minute 0
    origin: Instant,
    users: DashMap<Arc<str>, Window>,
}

impl RowBudgets {
    /// Empty budgets whose minutes count from `origin`.
    pub fn new(origin: Instant) -> Self {
        Self {
            origin,
            users: DashMap::new(),
        }
    }

    /// The minute `now` falls in (minute 60 is the first a full hour back can reach).
    fn minute(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs() / 60 + MINUTES as u64
    }

    /// The rows `user` read in the hour up to `now`.
    pub fn spent(&self, user: &str, now: Instant) -> u64 {
        let minute = self.minute(now);
        self.users.get(user).map_or(0, |w| w.spent(minute))
    }

    /// Counts `rows` that `user` read at `now`.
    pub fn add(&self, user: &Arc<str>, now: Instant, rows: u64) {
        if rows == 0 {
            return;
        }
        let minute = self.minute(now);
        let mut window = (self.users.entry(user.clone())).or_insert(Window([(0, 0); MINUTES]));
        window.add(minute, rows);
    }

    /// How long until `user`, who has spent `budget` by `now`, can read again: until the
    /// oldest minute whose rows bring the hour to the budget leaves the window.
    pub fn frees_in(&self, user: &str, budget: u64, now: Instant) -> Duration {
        let minute = self.minute(now);
        let Some(w) = self.users.get(user) else {
            return Duration::ZERO;
        };
        let mut minutes: Vec<(u64, u64)> = (w.0.iter().copied())
            .filter(|(m, rows)| *m + MINUTES as u64 > minute && *rows > 0)
            .collect();
        minutes.sort_unstable();
        let mut left = w.spent(minute);
        for (m, rows) in minutes {
            left -= rows;
            if left < budget {
                return Duration::from_secs((m + MINUTES as u64 - minute) * 60);
            }
        }
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_count_for_an_hour_per_user() {
        let t0 = Instant::now();
        let b = RowBudgets::new(t0);
        let alice: Arc<str> = Arc::from("alice");
        let min = |m: u64| t0 + Duration::from_secs(m * 60 + 1);
        b.add(&alice, min(0), 40);
        b.add(&alice, min(10), 50);
        b.add(&alice, min(10), 5);
        assert_eq!(b.spent("alice", min(10)), 95);
        assert_eq!(b.spent("bob", min(10)), 0);
        assert_eq!(b.spent("alice", min(59)), 95);
        // minute 0 leaves the window an hour later, minute 10 ten minutes after that
        assert_eq!(b.spent("alice", min(60)), 55);
        assert_eq!(b.spent("alice", min(70)), 0);
        // a slot reused an hour later starts over
        b.add(&alice, min(70), 7);
        assert_eq!(b.spent("alice", min(70)), 7);
    }

    #[test]
    fn a_spent_budget_frees_as_its_oldest_rows_leave_the_hour() {
        let t0 = Instant::now();
        let b = RowBudgets::new(t0);
        let alice: Arc<str> = Arc::from("alice");
        let min = |m: u64| t0 + Duration::from_secs(m * 60);
        b.add(&alice, min(5), 60);
        b.add(&alice, min(20), 40);
        // at minute 30, 100 spent of 100: minute 5 leaves at 65
        assert_eq!(
            b.frees_in("alice", 100, min(30)),
            Duration::from_secs(35 * 60)
        );
        // of a budget of 30, both minutes must go: minute 20 leaves at 80
        assert_eq!(
            b.frees_in("alice", 30, min(30)),
            Duration::from_secs(50 * 60)
        );
        assert_eq!(b.frees_in("bob", 30, min(30)), Duration::ZERO);
    }
}
