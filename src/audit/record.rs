//! One audit record: what happened, who did it, from where; never a value.

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
    /// failed (in phigate or in the server)
    Error,
}

/// One audit record (DESIGN section 7). Fields are written in this order; `seq`, `prev`
/// and `mac` are set by the chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// position in the chain
    pub seq: u64,
    /// RFC 3339 UTC time with microseconds
    pub ts: String,
    /// the phigate instance
    pub instance: String,
    /// the session (per instance)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
    /// the user
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// the user's role
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// the client's address
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
    /// the client's application_name
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
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
    /// checkpoints: Ed25519 signature (see [`super::chain`])
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// the previous line's mac
    pub prev: String,
}

/// The current time as RFC 3339 UTC with microseconds.
pub fn now() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}
