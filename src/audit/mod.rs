//! The tamper-evident audit log (DESIGN section 7): records, the hash chain that links
//! them, Ed25519-signed checkpoints, the segment files they are written to, and the
//! verifier security teams run.
//!
//! Every line of a segment is one JSON object. A record's `mac` is
//! HMAC-SHA256(chain key, previous mac || the line without its `mac` field); a checkpoint
//! (also a chained line) signs the range of records since the previous checkpoint with the
//! instance's Ed25519 key, including a SHA-256 digest of those lines, so a verifier holding
//! only the public key detects any edit up to the last checkpoint, and a verifier holding
//! the chain key detects any edit at all. Each segment ends with a checkpoint; `HEAD`
//! holds the newest one, so truncating the log below it is detected too.

mod auditor;
mod chain;
mod export;
mod json;
mod keys;
mod reader;
mod record;
mod redact;
mod report;
mod search;
mod staging;
mod store;
mod syncer;
mod syslog;
mod verify;

pub use auditor::Auditor;
pub use export::{OCSF_VERSION, cef, ocsf};
pub use keys::{AuditKeys, PublicKey};
pub use reader::Reader;
pub use record::{Decision, Kind, Record};
pub use redact::{Redacted, redact};
pub use report::{AccessReport, Subject};
pub use search::{Filter, follow, read_all, read_lines, table_row, with_outcomes};
pub use store::{AuditLog, Durability, LogOptions};
pub use syslog::{Body as SyslogBody, SD_ID, message as syslog_message};
pub use verify::{Problem, Report, verify};

use std::path::PathBuf;

use thiserror::Error;

use crate::protocol::value::{HEX_DIGITS, push_hex};

/// Why the audit log cannot be written or read. Never contains key material.
#[derive(Debug, Error)]
pub enum AuditError {
    /// A file operation failed.
    #[error("{path}: {cause}")]
    Io {
        /// the file or directory
        path: PathBuf,
        /// why
        cause: std::io::Error,
    },
    /// A key file is unusable.
    #[error("{path}: {problem}")]
    Key {
        /// the key file
        path: PathBuf,
        /// what is wrong
        problem: String,
    },
    /// Existing segments cannot be continued (the chain is broken where it would resume).
    #[error("{path}: cannot continue the audit chain: {problem}")]
    Corrupt {
        /// the segment
        path: PathBuf,
        /// what is wrong
        problem: String,
    },
}

/// Checks, without appending anything, that the log in `dir` can be written and its
/// signing key in `key_file` read (or created): what `phigate check` asks of the log.
pub(crate) fn check_writable(
    dir: &std::path::Path,
    key_file: &std::path::Path,
) -> Result<(), AuditError> {
    if key_file.exists() {
        AuditKeys::load(key_file)?;
    } else if let Some(parent) = key_file.parent().filter(|p| !p.as_os_str().is_empty()) {
        probe(parent)?;
    }
    probe(dir)
}

/// Writes and removes a file in `dir`, or in its nearest existing ancestor (which the log
/// would create it in): nothing is left behind.
fn probe(dir: &std::path::Path) -> Result<(), AuditError> {
    let existing = dir
        .ancestors()
        .find(|d| d.as_os_str().is_empty() || d.is_dir())
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let file = existing.join(format!(".phigate-check-{}", std::process::id()));
    std::fs::write(&file, b"").map_err(io(&file))?;
    std::fs::remove_file(&file).map_err(io(&file))
}

fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> AuditError {
    let path = path.into();
    move |cause| AuditError::Io { path, cause }
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests;

/// Lower-case hex of `bytes` (several run for every record).
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(bytes, &mut out);
    out
}

/// Lower-case hex of a MAC, as a line carries it (two run for every record).
fn hex32(bytes: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX_DIGITS[usize::from(b >> 4)];
        pair[1] = HEX_DIGITS[usize::from(b & 0xf)];
    }
    out
}
