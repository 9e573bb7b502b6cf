//! One audit record: what happened, who did it, from where; never a value.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// a statement, before it is forwarded
    Statement,
    /// a statement's outcome
    StatementEnd,
    /// a session opened
    SessionStart,
    /// a session ended
    SessionEnd,
    /// a login failed
    AuthFailure,
    /// a session was ended for idleness
    IdleTimeout,
    /// a connection was refused before its session started (no TLS where required,
    /// another database, too many connections...): `sqlstate` and `detail` say why
    ConnectionRefused,
    /// policies were reloaded (or a reload was refused)
    PolicyReload,
    /// a break-glass declaration
    BreakGlass,
    /// a signed checkpoint over the records since the previous one
    Checkpoint,
}

/// What phigate decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// forwarded
    Allowed,
    /// refused by phigate
    Denied,
    /// refused by the database: its row-level security or privileges (SQLSTATE 42501)
    DeniedByDatabase,
    /// stopped by the bulk-read guard (SQLSTATE 54000): the statement would have
    /// returned more rows of protected tables than the role's cap, or the user's hourly
    /// budget was spent
    Capped,
    /// failed (in phigate or in the server)
    Error,
}

/// `"name"` without its quotes.
fn unquoted(quoted: &'static str) -> &'static str {
    quoted.get(1..quoted.len() - 1).unwrap_or_default()
}

impl Kind {
    /// The kind's name in records (`statement_end`).
    pub fn name(self) -> &'static str {
        unquoted(self.quoted())
    }

    /// The kind as a JSON string (its serde name, quoted).
    pub(super) fn quoted(self) -> &'static str {
        match self {
            Self::Statement => "\"statement\"",
            Self::StatementEnd => "\"statement_end\"",
            Self::SessionStart => "\"session_start\"",
            Self::SessionEnd => "\"session_end\"",
            Self::AuthFailure => "\"auth_failure\"",
            Self::IdleTimeout => "\"idle_timeout\"",
            Self::ConnectionRefused => "\"connection_refused\"",
            Self::PolicyReload => "\"policy_reload\"",
            Self::BreakGlass => "\"break_glass\"",
            Self::Checkpoint => "\"checkpoint\"",
        }
    }
}

impl Decision {
    /// The decision's name in records (`denied_by_database`).
    pub fn name(self) -> &'static str {
        unquoted(self.quoted())
    }

    /// The decision as a JSON string (its serde name, quoted).
    pub(super) fn quoted(self) -> &'static str {
        match self {
            Self::Allowed => "\"allowed\"",
            Self::Denied => "\"denied\"",
            Self::DeniedByDatabase => "\"denied_by_database\"",
            Self::Capped => "\"capped\"",
            Self::Error => "\"error\"",
        }
    }

    /// The decision of a statement that ended with `sqlstate` (none: it succeeded).
    pub fn of_outcome(sqlstate: Option<&str>) -> Self {
        match sqlstate {
            None => Self::Allowed,
            Some("42501") => Self::DeniedByDatabase,
            Some(_) => Self::Error,
        }
    }

    /// True when a search for `self` should show a record decided `other`: `denied`
    /// finds refusals by phigate, by the database and by the bulk-read guard.
    pub fn finds(self, other: Self) -> bool {
        self == other
            || (self == Self::Denied && matches!(other, Self::DeniedByDatabase | Self::Capped))
    }
}

/// One audit record (DESIGN section 7). Fields are written in this order; `seq`, `prev`
/// and `mac` are set by the chain and come last, so the rest of a line is written before
/// the chain's lock is taken (see `Unsealed`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339 UTC time with microseconds
    pub ts: String,
    /// the phigate instance
    pub instance: String,
    /// the session (per instance)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
    /// the user
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Arc<str>>,
    /// the user's role
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Arc<str>>,
    /// the delegating service whose login the session is, when `user` is an end user it
    /// named
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Arc<str>>,
    /// the client's address
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<Arc<str>>,
    /// the client's application_name
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_name: Option<Arc<str>>,
    /// the client connection used TLS
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// what the record is about
    pub kind: Option<Kind>,
    /// the statement with every literal and parameter replaced by a placeholder
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// keyed hashes of the statement's literal and parameter values
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// the protected tables touched
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// the PHI columns touched (`table.column`)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phi_columns: Vec<String>,
    /// allowed, denied or error
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// the row policies applied
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies_applied: Vec<String>,
    /// rows returned or affected (from CommandComplete)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// the SQLSTATE of an error
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    /// time from forwarding to completion
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    /// the break-glass reason in force
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<String>,
    /// statement outcomes: the seq of the statement's record
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub begin: Option<u64>,
    /// free-form, PHI-free detail (reload errors, checkpoint ranges)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// checkpoints: the first and last seq covered, and how many records
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covers: Option<[u64; 3]>,
    /// checkpoints: SHA-256 over the previous checkpoint's digest and the covered lines
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// checkpoints: Ed25519 signature (see `audit::chain`)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// position in the chain (0 until sealed)
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u64,
    /// the previous line's mac (empty until sealed)
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prev: String,
}

impl Record {
    /// True when what the record tells of did not go through as asked: a refusal (by
    /// phigate or by the database), a failed login, a refused connection, an error.
    pub fn refused_or_failed(&self) -> bool {
        matches!(self.kind, Some(Kind::AuthFailure | Kind::ConnectionRefused))
            || matches!(
                self.decision,
                Some(
                    Decision::Denied
                        | Decision::DeniedByDatabase
                        | Decision::Capped
                        | Decision::Error
                )
            )
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A record written as JSON without its chain fields, ready to be sealed: `{"ts":...,`
/// up to its last field, without the closing brace.
#[derive(Debug)]
pub(crate) struct Unsealed {
    /// the JSON object, open
    pub(crate) open: String,
    /// where the UTC day of its time (`YYYY-MM-DD`) ends in `open`
    day_end: usize,
}

/// Where a record's time starts in its line: after `{"ts":"`.
const TS_AT: usize = 7;

impl Unsealed {
    /// `record` with `instance`, and its time set to now when empty (its chain fields
    /// are not written).
    pub(crate) fn new(record: &Record, instance: &str) -> Self {
        let mut open = String::with_capacity(512);
        let mut stamp = Stamp::default();
        let ts = if record.ts.is_empty() {
            stamp.now()
        } else {
            &record.ts
        };
        super::json::write_open(record, ts, instance, &mut open);
        let day_end = open
            .get(TS_AT..)
            .and_then(|rest| rest.find('"'))
            .map_or(TS_AT, |len| TS_AT + len.min(10));
        Self { open, day_end }
    }

    /// The UTC day of its time (`YYYY-MM-DD`).
    pub(crate) fn day(&self) -> &str {
        self.open.get(TS_AT..self.day_end).unwrap_or_default()
    }
}

/// The current time as RFC 3339 UTC with microseconds.
pub fn now() -> String {
    Stamp::default().now().to_owned()
}

/// A time as RFC 3339 UTC with microseconds (`2026-12-02T19:03:07.123456Z`), formatted
/// without allocating: the part up to the second is formatted once per second and
/// thread, the microseconds every time (a record's time is the hot path of the audit log).
#[derive(Default)]
struct Stamp([u8; STAMP_LEN]);

const STAMP_LEN: usize = "2026-12-02T19:03:07.123456Z".len();
/// `2026-12-02T19:03:07`
const SECOND_LEN: usize = 19;

thread_local! {
    /// The last second formatted on this thread, and its text.
    static SECOND: std::cell::Cell<(u64, [u8; SECOND_LEN])> =
        const { std::cell::Cell::new((u64::MAX, [0; SECOND_LEN])) };
}

impl Stamp {
    /// The current time.
    fn now(&mut self) -> &str {
        self.at(std::time::SystemTime::now())
    }

    fn at(&mut self, time: std::time::SystemTime) -> &str {
        let since = time
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let second = SECOND.with(|cached| {
            let (at, text) = cached.get();
            if at == since.as_secs() {
                return text;
            }
            let whole = std::time::UNIX_EPOCH + std::time::Duration::from_secs(since.as_secs());
            let mut text = [0; SECOND_LEN];
            let formatted = humantime::format_rfc3339_seconds(whole).to_string();
            text.copy_from_slice(
                formatted
                    .as_bytes()
                    .get(..SECOND_LEN)
                    .unwrap_or(&[b'0'; SECOND_LEN]),
            );
            cached.set((since.as_secs(), text));
            text
        });
        let (head, tail) = self.0.split_at_mut(SECOND_LEN);
        head.copy_from_slice(&second);
        tail[0] = b'.';
        let mut micros = since.subsec_micros();
        for digit in tail[1..7].iter_mut().rev() {
            *digit = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        tail[7] = b'Z';
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::Stamp;

    #[test]
    fn a_stamp_reads_as_humantime_writes_it() {
        let base = UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        // the same second twice (the cached part), the next one, a leap day, micros 0
        for offset in [7, 123_456, 999_999, 1_000_000, 1_000_001, 86_400_000_000] {
            let t = base + Duration::from_micros(offset);
            let want = humantime::format_rfc3339_micros(t).to_string();
            assert_eq!(Stamp::default().at(t), want);
        }
        let leap = humantime::parse_rfc3339("2028-02-29T23:59:59.000000Z").unwrap();
        assert_eq!(Stamp::default().at(leap), "2028-02-29T23:59:59.000000Z");
        let now = SystemTime::now();
        assert_eq!(
            Stamp::default().at(now),
            humantime::format_rfc3339_micros(now).to_string()
        );
    }
}
