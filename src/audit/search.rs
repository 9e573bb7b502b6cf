//! Reading the log back for reviewers: `phigate audit search` and `phigate audit tail`.

use std::path::Path;
use std::time::Duration;

use super::record::{Decision, Kind, Record};
use super::store::segments;
use super::{AuditError, io};

/// What a search looks for; every given criterion must hold.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// the user
    pub user: Option<String>,
    /// the role
    pub role: Option<String>,
    /// a protected table touched (`schema.table`, or just `table`)
    pub table: Option<String>,
    /// a PHI column touched (`column`, or `schema.table.column`)
    pub column: Option<String>,
    /// the decision (`denied` also finds `denied_by_database`)
    pub decision: Option<Decision>,
    /// the record kind
    pub kind: Option<Kind>,
    /// records at or after this time (an RFC 3339 prefix such as `2026-11-24` works)
    pub since: Option<String>,
    /// records before this time
    pub until: Option<String>,
    /// the keyed hash of a value (see [`super::AuditKeys::value_hash`])
    pub value_hash: Option<String>,
}

impl Filter {
    /// True when `r` matches.
    pub fn matches(&self, r: &Record) -> bool {
        let eq = |want: &Option<String>, have: &Option<std::sync::Arc<str>>| {
            want.as_deref().is_none_or(|w| have.as_deref() == Some(w))
        };
        let names = |want: &Option<String>, have: &[String]| {
            want.as_ref()
                .is_none_or(|w| have.iter().any(|h| h == w || h.ends_with(&format!(".{w}"))))
        };
        eq(&self.user, &r.user)
            && eq(&self.role, &r.role)
            && names(&self.table, &r.tables)
            && names(&self.column, &r.phi_columns)
            && self
                .decision
                .is_none_or(|d| r.decision.is_some_and(|have| d.finds(have)))
            && self.kind.is_none_or(|k| r.kind == Some(k))
            && self
                .since
                .as_ref()
                .is_none_or(|s| r.ts.as_str() >= s.as_str())
            && self
                .until
                .as_ref()
                .is_none_or(|u| r.ts.as_str() < u.as_str())
            && self
                .value_hash
                .as_ref()
                .is_none_or(|h| r.values.contains(h))
    }
}

/// Every record in `dir`, oldest first (checkpoints included).
pub fn read_all(dir: &Path) -> Result<Vec<Record>, AuditError> {
    let mut out = Vec::new();
    each_line(dir, |_, record| out.push(record))?;
    Ok(out)
}

/// Every line in `dir` as stored (MACs included), oldest first, with its record.
pub fn read_lines(dir: &Path) -> Result<Vec<(String, Record)>, AuditError> {
    let mut out = Vec::new();
    each_line(dir, |line, record| out.push((line.to_owned(), record)))?;
    Ok(out)
}

/// Calls `each` with every line of every segment of `dir`, oldest first, and its record.
fn each_line(dir: &Path, mut each: impl FnMut(&str, Record)) -> Result<(), AuditError> {
    for seg in segments(dir)? {
        let text = std::fs::read_to_string(&seg).map_err(io(&seg))?;
        for line in text.lines() {
            each(line, parse(&seg, line)?);
        }
    }
    Ok(())
}

/// The records with each statement's outcome (rows, SQLSTATE, duration; `error` when it
/// failed) folded into its begin record, so one record says what was asked and what came
/// of it. Outcome records whose begin record is present are left out.
pub fn with_outcomes(records: Vec<Record>) -> Vec<Record> {
    let mut at = std::collections::HashMap::new();
    let mut out: Vec<Record> = Vec::with_capacity(records.len());
    for r in records {
        let begin = r.begin.filter(|_| r.kind == Some(Kind::StatementEnd));
        match begin.and_then(|b| at.get(&b).copied()) {
            Some(i) => fold(&mut out[i], &r),
            None => {
                if r.kind == Some(Kind::Statement) {
                    at.insert(r.seq, out.len());
                }
                out.push(r);
            }
        }
    }
    out
}

fn fold(begin: &mut Record, end: &Record) {
    begin.rows = end.rows;
    begin.duration_us = end.duration_us;
    if begin.sqlstate.is_none() {
        begin.sqlstate.clone_from(&end.sqlstate);
    }
    // an outcome record only says how an allowed statement ended
    if begin.decision == Some(Decision::Allowed) && end.decision.is_some() {
        begin.decision = end.decision;
    }
}

fn parse(seg: &Path, line: &str) -> Result<Record, AuditError> {
    serde_json::from_str(line).map_err(|e| AuditError::Corrupt {
        path: seg.to_owned(),
        problem: format!("a line is not a record: {e}"),
    })
}

/// One record as a line of a table: seq, time, user, role, kind, decision, outcome
/// (SQLSTATE or rows, and duration), statement.
pub fn table_row(r: &Record) -> String {
    let kind = r.kind.map(Kind::name).unwrap_or_default();
    let decision = r.decision.map(Decision::name).unwrap_or_default();
    let mut outcome = match (&r.sqlstate, r.rows) {
        (Some(s), _) => s.clone(),
        (None, Some(n)) => format!("{n} rows"),
        _ => String::new(),
    };
    if let Some(us) = r.duration_us {
        outcome.push_str(&format!(" {:.3}ms", us as f64 / 1000.0));
    }
    let what = match (r.kind, r.begin) {
        (Some(Kind::StatementEnd), Some(b)) => Some(format!("(outcome of {b})")),
        _ => None,
    };
    // an end user a delegating service named: `nurse.joy@ehr_app`
    let user = match (&r.user, &r.service) {
        (Some(u), Some(s)) => format!("{u}@{s}"),
        (u, _) => u.as_deref().unwrap_or("-").to_owned(),
    };
    format!(
        "{:>8} {} {:<12} {:<12} {:<16} {:<9} {:<18} {}",
        r.seq,
        r.ts,
        user,
        r.role.as_deref().unwrap_or("-"),
        kind,
        decision,
        outcome,
        r.statement
            .as_deref()
            .or(r.detail.as_deref())
            .or(what.as_deref())
            .unwrap_or(""),
    )
}

/// Follows the log: calls `each` for every record appended after the last `n` ones,
/// across segment rotations, until `each` returns false.
pub fn follow(
    dir: &Path,
    n: usize,
    mut each: impl FnMut(&Record) -> bool,
) -> Result<(), AuditError> {
    let all = read_all(dir)?;
    for r in &all[all.len().saturating_sub(n)..] {
        if !each(r) {
            return Ok(());
        }
    }
    let mut reader = super::Reader::new(dir, all.last().map_or(0, |r| r.seq));
    loop {
        let batch = reader.next_batch()?;
        if batch.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
        }
        for (_, r) in &batch {
            if !each(r) {
                return Ok(());
            }
        }
    }
}
