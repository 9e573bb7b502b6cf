//! What a session enforces: the analyser and the ciphers in force, replaced together when
//! the policies reload, and the session's own subject.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::encryption::Ciphers;
use crate::policy::RowBudgets;
use crate::sql::{Analyzer, Refusal, Subject};

/// The policies in force and the ciphers of their protected columns.
#[derive(Debug)]
pub struct Enforced {
    /// the firewall and the analysis
    pub analyzer: Analyzer,
    /// the column ciphers
    pub ciphers: Ciphers,
}

/// What is enforced now, replaced whole when the policies reload: sessions pick up the new
/// one at their next statement.
#[derive(Debug)]
pub struct Enforcement(std::sync::RwLock<Arc<Enforced>>);

impl Enforcement {
    /// Enforces `analyzer` with `ciphers`.
    pub fn new(analyzer: Analyzer, ciphers: Ciphers) -> Self {
        Self(std::sync::RwLock::new(Arc::new(Enforced {
            analyzer,
            ciphers,
        })))
    }

    /// What is in force.
    pub fn current(&self) -> Arc<Enforced> {
        match self.0.read() {
            Ok(a) => a.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `analyzer` and `ciphers` in force.
    pub fn replace(&self, analyzer: Analyzer, ciphers: Ciphers) {
        let new = Arc::new(Enforced { analyzer, ciphers });
        match self.0.write() {
            Ok(mut a) => *a = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }
}

/// What a session enforces: the policies in force (firewall, column access, row policies,
/// encryption) for its user.
#[derive(Debug, Clone)]
pub struct Guard {
    /// the policies in force, replaced whole when they reload
    pub enforcement: Arc<Enforcement>,
    /// the session's user and role (the emergency flag is the session's to keep)
    pub subject: Subject,
    /// how long a declared emergency lasts
    pub break_glass_for: Duration,
    /// tags the emergency setting so that only this backend's native policies accept it
    pub session_key: Arc<crate::policy::session_key::SessionKey>,
    /// the upstream backend's process id
    pub backend_pid: i32,
    /// when the session started, on the monotonic clock and the wall clock: an emergency's
    /// wall-clock expiry (which the native policies read) is computed from them
    pub started: (Instant, SystemTime),
    /// every user's rows of protected tables in the last hour (shared by all sessions)
    pub budgets: Arc<RowBudgets>,
    /// the session's user is a service that names its end users
    pub delegation: Option<crate::policy::Delegation>,
}

impl Guard {
    /// The refusal of a statement whose rows count against the user's hourly budget
    /// (`max_rows_per_hour`) when that budget is spent; `None` when it is not, or in an
    /// emergency (which lifts it).
    pub(super) fn over_budget(
        &self,
        who: &Subject,
        now: Instant,
        emergency: bool,
    ) -> Option<Refusal> {
        if emergency {
            return None;
        }
        let enforced = self.enforcement.current();
        let role = enforced.analyzer.policies().role(&who.role)?;
        let budget = role.max_rows_per_hour?;
        let user = &who.user;
        if self.budgets.spent(user, now) < budget {
            return None;
        }
        let wait = self
            .budgets
            .frees_in(user, budget, now)
            .as_secs()
            .div_ceil(60);
        Some(Refusal {
            code: "54000",
            message: format!(
                "user {user} has read {budget} rows of protected tables in the last hour, the most role {} allows (max_rows_per_hour)",
                who.role
            ),
            hint: format!(
                "the budget frees up as the hour passes (in about {wait} min); in an emergency, SET phigate.break_glass = '<reason>' lifts it"
            ),
        })
    }

    /// Counts `rows` of protected tables `user` read.
    pub(super) fn count_rows(&self, user: &Arc<str>, now: Instant, rows: u64) {
        self.budgets.add(user, now, rows);
    }
}
