//! The audit records of a session, as effects: the session builds them (redacted text,
//! keyed hashes of values, the tables and columns a plan touches) and puts them in its
//! [`Outbound`]; the driver writes them. A statement's begin record is *gated*: the
//! statement is held until the driver reports it written. Its outcome record follows when
//! the server answers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::{Outbound, Session, SessionAudit};
use crate::audit::{Decision, Kind, Record, Redacted, redact};
use crate::protocol::message::Frontend;
use crate::sql::{Analysis, Plan};

/// What the audit log records of a client message before it is forwarded.
pub(super) enum Begin {
    /// nothing waits: the message is forwarded at once
    Nothing,
    /// the message waits for these records (see [`Outbound::gated`])
    Gated(Vec<Record>),
}

impl SessionAudit {
    /// The begin record of one statement.
    fn statement(&self, stmt: &Redacted, params: &[String], analysis: Option<&Analysis>) -> Record {
        let mut r = Record::clone(&self.template);
        r.kind = Some(Kind::Statement);
        r.statement = Some(stmt.text.clone());
        r.values = stmt
            .values
            .iter()
            .map(|v| self.keys.value_hash(v))
            .chain(params.iter().cloned())
            .collect();
        r.decision = Some(Decision::Allowed);
        match analysis {
            Some(Analysis::Rewrite(plan)) => touched(&mut r, plan),
            Some(Analysis::Declare { reason }) => {
                r.kind = Some(Kind::BreakGlass);
                r.break_glass = Some(reason.clone());
            }
            Some(Analysis::Refuse(refusal)) => {
                r.decision = Some(Decision::Denied);
                r.sqlstate = Some(refusal.code.to_owned());
            }
            _ => {}
        }
        r
    }
}

/// What a rewritten statement touches, in its record.
fn touched(r: &mut Record, plan: &Plan) {
    r.tables = plan.tables.iter().map(|t| t.name.to_string()).collect();
    r.phi_columns.clone_from(&plan.columns);
    r.policies_applied.clone_from(&plan.policies);
}

/// A fast-path call, as the audit log names it.
fn function_call() -> Redacted {
    Redacted {
        text: "<fast-path function call>".into(),
        values: Vec::new(),
    }
}

/// An Execute of a portal phigate does not know.
fn unknown_portal() -> Redacted {
    Redacted {
        text: "<unknown portal>".into(),
        values: Vec::new(),
    }
}

impl Session {
    /// The begin records of a client message; `over_budget` when `analysis` is the
    /// refusal of a spent hourly row budget. A refused Parse is recorded without a gate
    /// (the refusal is what runs).
    pub(super) fn audit_begin(
        &self,
        msg: &Frontend<'_>,
        analysis: Option<&Analysis>,
        over_budget: bool,
        out: &mut Outbound,
    ) -> Begin {
        let mut begin = self.begin_records(msg, analysis, out);
        if let (true, Begin::Gated(records), Some(Analysis::Refuse(refusal))) =
            (over_budget, &mut begin, analysis)
        {
            for r in records {
                r.decision = Some(Decision::Capped);
                r.sqlstate = Some(refusal.code.to_owned());
            }
        }
        if let Begin::Gated(records) = &mut begin {
            records.iter_mut().for_each(|r| self.spoken(r));
        }
        begin
    }

    /// A record of a statement an end user's delegating service sent: the end user and
    /// their role, and the service.
    fn spoken(&self, r: &mut Record) {
        if let Some(s) = &self.speaker {
            r.service = r.user.take();
            r.user = Some(s.user.clone());
            r.role = Some(s.role.clone());
        }
    }

    fn begin_records(
        &self,
        msg: &Frontend<'_>,
        analysis: Option<&Analysis>,
        out: &mut Outbound,
    ) -> Begin {
        let Some(audit) = &self.audit else {
            return Begin::Nothing;
        };
        match msg {
            Frontend::Query { sql } => {
                let records: Vec<Record> = redact(sql)
                    .iter()
                    .map(|stmt| self.referred(audit.statement(stmt, &[], analysis)))
                    .collect();
                // an empty query string has no statement to record
                match records.is_empty() {
                    true => Begin::Nothing,
                    false => Begin::Gated(records),
                }
            }
            Frontend::FunctionCall => {
                Begin::Gated(vec![audit.statement(&function_call(), &[], analysis)])
            }
            Frontend::Parse { sql, .. } => {
                if let Some(Analysis::Refuse(_)) = analysis
                    && let Some(text) = redact(sql).first()
                {
                    let mut r = self.referred(audit.statement(text, &[], analysis));
                    self.spoken(&mut r);
                    out.audit.push(r);
                }
                Begin::Nothing
            }
            Frontend::Execute { portal, .. } => {
                let portal = self.registry.portal(portal);
                let unknown = unknown_portal();
                let text = portal
                    .and_then(|p| p.audited.as_deref())
                    .unwrap_or(&unknown);
                let hashes = portal.map_or(&[][..], |p| &p.hashes);
                let mut r = audit.statement(text, hashes, None);
                if let Some(rows) = portal.and_then(|p| p.rows.as_ref()) {
                    touched(&mut r, &rows.plan);
                }
                Begin::Gated(vec![r])
            }
            _ => Begin::Nothing,
        }
    }

    /// A refused statement's record, with the protected tables and columns it named (so
    /// a search by table finds the attempt).
    fn referred(&self, mut r: Record) -> Record {
        if r.decision == Some(Decision::Denied)
            && let (Some(text), Some(enforced)) = (&r.statement, self.enforced())
        {
            (r.tables, r.phi_columns) = enforced.analyzer.referred(text);
        }
        r
    }

    /// The text the audit log keeps of a statement being prepared.
    pub(super) fn audit_text(&self, sql: &str) -> Option<Arc<Redacted>> {
        self.audit.as_ref()?;
        redact(sql).into_iter().next().map(Arc::new)
    }

    /// The keyed hashes of a Bind's parameters.
    pub(super) fn audit_hashes(&self, params: &[Option<&[u8]>]) -> Vec<String> {
        let Some(audit) = &self.audit else {
            return Vec::new();
        };
        params
            .iter()
            .flatten()
            .map(|v| audit.keys.value_hash(v))
            .collect()
    }

    /// The outcome record of a statement whose begin record is `begin`: its session,
    /// outcome (a failure's SQLSTATE and decision), rows and duration, and nothing its
    /// begin record holds.
    pub(super) fn audit_end(
        &self,
        begin: u64,
        rows: Option<u64>,
        failure: Option<(&str, Decision)>,
        elapsed: Duration,
        out: &mut Outbound,
    ) {
        let Some(audit) = &self.audit else {
            return;
        };
        // who, from where and under which emergency is in the begin record
        let mut r = Record {
            session: audit.template.session,
            ..Record::default()
        };
        r.kind = Some(Kind::StatementEnd);
        r.begin = Some(begin);
        r.rows = rows;
        r.sqlstate = failure.map(|(code, _)| code.to_owned());
        r.decision = Some(failure.map_or(Decision::Allowed, |(_, d)| d));
        r.duration_us = Some(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
        out.audit.push(r);
    }

    /// The outcome records of statements that did not run (after a failed one in a
    /// simple query).
    pub(super) fn audit_not_run(&self, begins: VecDeque<u64>, out: &mut Outbound) {
        for begin in begins {
            let failure = Some(("not run", Decision::Error));
            self.audit_end(begin, None, failure, Duration::ZERO, out);
        }
    }

    /// A record of the session (an idle timeout, say) that nothing waits for.
    pub(super) fn audit_event(&self, kind: Kind, out: &mut Outbound) {
        if let Some(audit) = &self.audit {
            let mut r = Record::clone(&audit.template);
            r.kind = Some(kind);
            out.audit.push(r);
        }
    }

    /// From now on, records carry the declared emergency's reason (or none).
    pub(super) fn audit_break_glass(&mut self, reason: Option<String>) {
        if let Some(a) = &mut self.audit {
            Arc::make_mut(&mut a.template).break_glass = reason;
        }
    }
}
