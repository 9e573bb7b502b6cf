//! Messages from the client: analysed once (for the audit record and the rewrite), held
//! until their audit records are written, then forwarded as they are, rewritten (protected
//! parameters encrypted) or replaced by a refusal, each noting the response it is owed.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use super::auditing::Begin;
use super::copy::ClientCopy;
use super::queue::Pending;
use super::refuse::{
    audit_refusal, delegated_declare_refusal, extended_declare_refusal, extended_end_user_refusal,
    fast_path_refusal, no_ciphers_refusal, unanswered_parse_refusal,
};
use super::registry::{Portal, Prepared, Rows, Statement};
use super::{Event, Held, Outbound, Phase, Session};
use crate::encryption;
use crate::protocol::build;
use crate::protocol::frame::Frame;
use crate::protocol::message::{Bind, Frontend, Target};
use crate::sql::{Analysis, Plan, Subject};

/// The client-side large-object functions (fixed OIDs in `pg_proc`): lo_open, lo_close,
/// loread, lowrite, lo_lseek, lo_creat, lo_tell, lo_unlink, lo_create, lo_truncate and the
/// 64-bit lo_lseek64, lo_tell64, lo_truncate64. Not the server-side lo_import/lo_export.
const LARGE_OBJECT_FUNCTIONS: [u32; 13] = [
    952, 953, 954, 955, 956, 957, 958, 964, 715, 1004, 3170, 3171, 3172,
];

/// True when a FunctionCall body calls one of [`LARGE_OBJECT_FUNCTIONS`].
fn large_object_call(body: &[u8]) -> bool {
    body.get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .is_some_and(|oid| LARGE_OBJECT_FUNCTIONS.contains(&oid))
}

/// `SHOW application_name`, alone.
fn is_show_application_name(sql: &str) -> bool {
    is_two_words(sql, "show", "application_name")
}

/// True when `sql` is the two words `first second` alone (any case, spacing, a final `;`).
pub(super) fn is_two_words(sql: &str, first: &str, second: &str) -> bool {
    // word by word: most statements are ruled out by their first
    let mut words = sql.trim().trim_end_matches(';').split_whitespace();
    words.next().is_some_and(|a| a.eq_ignore_ascii_case(first))
        && words.next().is_some_and(|b| b.eq_ignore_ascii_case(second))
        && words.next().is_none()
}

impl Session {
    /// One client message, in UTF-8.
    pub(super) fn frontend(&mut self, frame: Frame, now: Instant, out: &mut Outbound) {
        let frame = if self.tracks_statements() {
            self.conforming(frame)
        } else {
            frame
        };
        let msg = match Frontend::decode(&frame) {
            Ok(m) => m,
            Err(e) => return self.protocol_violation(&e, out),
        };
        if !self.tracks_statements() {
            // neither analysed nor audited: forwarded as it is
            return self.forward(&frame, &msg, None, VecDeque::new(), now, out);
        }
        if self
            .emergency
            .as_ref()
            .is_some_and(|(until, _)| now >= *until)
        {
            self.emergency = None;
            self.audit_break_glass(None);
        }
        self.follow_search_path(&msg);
        let (analysis, speaker) = self.decide(&frame, &msg);
        self.speaker = speaker.clone();
        let (analysis, over_budget) = self.within_budget(&msg, analysis, now, out);
        match self.audit_begin(&msg, analysis.as_ref(), over_budget, out) {
            Begin::Nothing => self.forward(&frame, &msg, analysis, VecDeque::new(), now, out),
            Begin::Gated(records) => {
                out.gated.extend(records);
                self.held = Some(Held {
                    frame,
                    analysis,
                    speaker,
                });
            }
        }
    }

    /// What phigate makes of a message, and the end user it runs for (a delegating
    /// service's). `SET phigate.end_user` and what ends it are followed here, in protocol
    /// order.
    fn decide(&mut self, frame: &Frame, msg: &Frontend<'_>) -> (Option<Analysis>, Option<Subject>) {
        let speaker = match msg {
            Frontend::Query { sql } | Frontend::Parse { sql, .. } => self.end_user_of(sql),
            Frontend::Execute { portal, .. } => {
                Ok((self.registry.portal(portal)).and_then(|p| p.subject.clone()))
            }
            _ => Ok(None),
        };
        let speaker = match speaker {
            Ok(s) => s,
            Err(r) => return (Some(Analysis::Refuse(Arc::new(r))), None),
        };
        let analysis = self.analyse(frame, msg, speaker.as_ref());
        let set = match &analysis {
            Some(Analysis::EndUser { name }) => Some(name.as_deref()),
            _ => None,
        };
        let followed = match (&analysis, msg) {
            (Some(Analysis::EndUser { .. }), Frontend::Parse { .. }) => {
                Err(extended_end_user_refusal())
            }
            (Some(Analysis::Declare { .. }), _) if self.delegated.is_some() => {
                Err(delegated_declare_refusal())
            }
            (Some(Analysis::Refuse(_)), _) => Ok(()),
            _ => self.follow_end_user(msg, set),
        };
        match followed {
            Ok(()) => (analysis, speaker),
            Err(r) => (Some(Analysis::Refuse(Arc::new(r))), speaker),
        }
    }

    /// The held message, once its audit records are written (or not).
    pub(super) fn release(
        &mut self,
        held: Held,
        written: Result<Vec<u64>, crate::audit::AuditError>,
        now: Instant,
        out: &mut Outbound,
    ) {
        let Held {
            frame,
            analysis,
            speaker,
        } = held;
        self.speaker = speaker;
        let msg = match Frontend::decode(&frame) {
            Ok(m) => m,
            Err(e) => return self.protocol_violation(&e, out),
        };
        match written {
            Ok(seqs) => self.forward(&frame, &msg, analysis, seqs.into(), now, out),
            Err(e) => {
                tracing::error!(error = %e, "audit log unwritable: statement refused");
                let refusal = Arc::new(audit_refusal());
                match msg {
                    Frontend::Execute { .. } => self.refuse_extended(refusal, out),
                    _ => self.refuse_query(refusal, now, out),
                }
            }
        }
    }

    /// What phigate makes of a statement: only with a guard, and only for statement text
    /// (and fast-path calls, which name their function by OID out of the firewall's sight).
    fn analyse(
        &mut self,
        frame: &Frame,
        msg: &Frontend<'_>,
        who: Option<&Subject>,
    ) -> Option<Analysis> {
        let ctx = self.ctx();
        let g = self.guard.as_mut()?;
        match msg {
            // The server knows phigate:<user>/<name>; the client sees its own name.
            Frontend::Query { sql } | Frontend::Parse { sql, .. }
                if is_show_application_name(sql) =>
            {
                Some(Analysis::Rewrite(Arc::new(Plan::text(format!(
                    "SELECT {}::text AS application_name",
                    crate::policy::quote_text(self.params.shown_app_name())
                )))))
            }
            Frontend::Query { sql } | Frontend::Parse { sql, .. } => {
                g.subject.emergency = self.emergency.is_some();
                let enforced = g.enforcement.current();
                let who = who.unwrap_or(&g.subject);
                Some(
                    enforced
                        .analyzer
                        .analyse_on(who, ctx, &self.search_path, sql),
                )
            }
            Frontend::FunctionCall if !large_object_call(frame.body()) => {
                Some(Analysis::Refuse(Arc::new(fast_path_refusal())))
            }
            _ => None,
        }
    }

    /// Sends a message on (as it is, rewritten or refused) and notes what it is owed;
    /// `seqs` are its audit records.
    #[inline]
    fn forward(
        &mut self,
        frame: &Frame,
        msg: &Frontend<'_>,
        analysis: Option<Analysis>,
        mut seqs: VecDeque<u64>,
        now: Instant,
        out: &mut Outbound,
    ) {
        let copy_in = self.queue.copy_in;
        match msg {
            Frontend::Query { .. } => return self.query(frame, analysis, seqs, now, out),
            Frontend::FunctionCall => {
                if let Some(Analysis::Refuse(r)) = analysis {
                    return self.refuse_query(r, now, out);
                }
                self.queue.owe_now(Pending::Query {
                    since: now,
                    plan: None,
                    refused: None,
                    audit: seqs,
                });
            }
            Frontend::Parse {
                name,
                sql,
                param_types,
            } => return self.parse(frame, (name, sql, param_types), analysis, out),
            Frontend::Bind(b) => return self.bind(frame, b, out),
            Frontend::Describe { target, name } => {
                // a statement planned for another end user is planned for this one first
                if *target == Target::Statement
                    && let Err(r) = self.bind_subject(name, out)
                {
                    return self.refuse_extended(r, out);
                }
                self.describe(*target, name);
            }
            Frontend::Execute { portal, .. } => {
                // refused when the hourly row budget is spent
                if let Some(Analysis::Refuse(r)) = analysis {
                    return self.refuse_extended(r, out);
                }
                let who = self.speaker.clone();
                self.set_identity(who.as_ref(), false, out);
                self.execute(portal, seqs.pop_front(), now);
            }
            Frontend::Close { target, name } => {
                match target {
                    Target::Statement => self.registry.close_statement(name),
                    Target::Portal => self.registry.close_portal(name),
                }
                self.queue.owe(Pending::Close);
            }
            // PostgreSQL ignores Sync and Flush while a COPY FROM STDIN is streaming.
            Frontend::Sync if !copy_in => self.queue.sync(),
            Frontend::Flush if !copy_in => self.queue.flush(),
            Frontend::Sync | Frontend::Flush => {}
            Frontend::CopyData => return self.copy_data(frame, out),
            Frontend::CopyDone | Frontend::CopyFail => self.copy_end(msg, out),
            Frontend::Terminate => {
                self.phase = Phase::Closed;
                if self.rested && self.queue.is_empty() && self.tx_status == b'I' {
                    // not forwarded: the driver ends the upstream session, or resets it
                    // and keeps it for another client
                    self.reusable = true;
                    return;
                }
            }
        }
        out.upstream.extend_from_slice(frame.raw());
    }

    /// A simple Query: forwarded, rewritten, refused, or an emergency declared.
    fn query(
        &mut self,
        frame: &Frame,
        analysis: Option<Analysis>,
        seqs: VecDeque<u64>,
        now: Instant,
        out: &mut Outbound,
    ) {
        let ctx = self.ctx();
        let who = self.speaker.clone();
        self.set_identity(who.as_ref(), true, out);
        let plan = match analysis {
            None | Some(Analysis::Pass | Analysis::Bound(_) | Analysis::EndUser { .. }) => {
                self.copy.client = ClientCopy::Raw;
                out.upstream.extend_from_slice(frame.raw());
                None
            }
            Some(Analysis::Declare { reason }) => {
                self.declare(reason, now, out);
                None
            }
            Some(Analysis::Rewrite(plan)) => {
                let Some(enforced) = self.enforced() else {
                    return self.refuse_query(Arc::new(no_ciphers_refusal()), now, out);
                };
                let ciphers = &enforced.ciphers;
                build::query(&encryption::render(&plan.sql, ciphers), &mut out.upstream);
                self.copy.client = ClientCopy::after(&plan, ciphers, ctx);
                Some(plan)
            }
            Some(Analysis::Refuse(r)) => return self.refuse_query(r, now, out),
        };
        self.queue.owe_now(Pending::Query {
            since: now,
            plan,
            refused: None,
            audit: seqs,
        });
    }

    /// `SET phigate.break_glass`: row policies and masks are lifted for a while, upstream
    /// too (the native row policies read the tagged expiry and lift on their own).
    fn declare(&mut self, reason: String, now: Instant, out: &mut Outbound) {
        let Some(g) = self.guard.as_ref() else {
            return;
        };
        let lasts = g.break_glass_for;
        let (mono, wall) = g.started;
        let until = wall + now.saturating_duration_since(mono) + lasts;
        let until = humantime::format_rfc3339_seconds(until).to_string();
        let tagged = g.session_key.emergency(&until, g.backend_pid);
        build::query(
            &format!("SET phigate.emergency = '{tagged}'"),
            &mut out.upstream,
        );
        self.audit_break_glass(Some(reason.clone()));
        out.events.push(Event::BreakGlass);
        self.emergency = Some((now + lasts, reason));
    }

    /// A Parse: a rewritten statement is sent as its rewrite, followed by a Describe
    /// phigate keeps to itself (to learn the result columns it decrypts).
    fn parse(
        &mut self,
        frame: &Frame,
        (name, sql, declared): (&str, &str, &[u32]),
        analysis: Option<Analysis>,
        out: &mut Outbound,
    ) {
        self.copy.client = ClientCopy::Raw;
        let audited = self.audit_text(sql);
        let mut bound = None;
        let (prepared, hidden) = match analysis {
            None | Some(Analysis::Pass) => {
                out.upstream.extend_from_slice(frame.raw());
                (None, None)
            }
            Some(Analysis::Bound(settings)) => {
                out.upstream.extend_from_slice(frame.raw());
                bound = Some(settings);
                (None, None)
            }
            // A refused Parse reaches PostgreSQL as another statement: what `name` was,
            // it stays.
            Some(Analysis::Declare { .. }) => {
                return self.refuse_extended(Arc::new(extended_declare_refusal()), out);
            }
            Some(Analysis::EndUser { .. }) => {
                return self.refuse_extended(Arc::new(extended_end_user_refusal()), out);
            }
            Some(Analysis::Refuse(r)) => return self.refuse_extended(r, out),
            Some(Analysis::Rewrite(plan)) => {
                let Some(enforced) = self.enforced() else {
                    return self.refuse_extended(Arc::new(no_ciphers_refusal()), out);
                };
                let sent =
                    encryption::parse(name, &plan, declared, &enforced.ciphers, &mut out.upstream);
                if let Err(r) = sent {
                    return self.refuse_extended(Arc::new(r), out);
                }
                build::describe(b'S', name, &mut out.upstream);
                let shape = Arc::new(OnceLock::new());
                let hidden = Pending::HiddenDescribe(plan.clone(), shape.clone());
                let prepared = Prepared {
                    plan,
                    declared: declared.to_vec(),
                    shape,
                };
                (Some(prepared), Some(hidden))
            }
        };
        let replaces = match self.tracks_statements() {
            true => self
                .registry
                .parse(
                    name,
                    Statement {
                        audited,
                        prepared,
                        text: self.delegated.as_ref().map(|_| Arc::from(sql)),
                        bound,
                    },
                )
                .map(|s| Box::new((name.to_owned(), s))),
            false => None,
        };
        self.queue.owe(Pending::Parse { replaces });
        if let Some(hidden) = hidden {
            self.queue.owe(hidden);
        }
    }

    /// A Bind: parameters of protected columns are encrypted.
    fn bind(&mut self, frame: &Frame, b: &Bind<'_>, out: &mut Outbound) {
        if !self.tracks_statements() {
            out.upstream.extend_from_slice(frame.raw());
            return self.queue.owe(Pending::Bind);
        }
        let ctx = self.ctx();
        if self.statement_now(b.statement).1 {
            return self.refuse_extended(Arc::new(unanswered_parse_refusal()), out);
        }
        let subject = match self.bind_subject(b.statement, out) {
            Ok(s) => s,
            Err(r) => return self.refuse_extended(r, out),
        };
        let statement = self.statement_now(b.statement).0;
        if let Some(Err(r)) = statement
            .and_then(|s| s.bound.as_deref())
            .map(|bound| check_bound(bound, b))
        {
            return self.refuse_extended(Arc::new(r), out);
        }
        let audited = statement.and_then(|s| s.audited.clone());
        let prepared = statement.and_then(|s| s.prepared.as_ref());
        let hashes = self.audit_hashes(&b.params);
        let enforced = self.enforced();
        let encrypted = prepared.map(|prep| {
            let enforced = enforced.as_ref().ok_or_else(no_ciphers_refusal)?;
            let rows = Rows {
                plan: prep.plan.clone(),
                shape: prep.shape.clone(),
                formats: b.result_formats.iter().collect(),
            };
            let plan = (&*prep.plan, &prep.declared[..]);
            encryption::bind(b, plan, &enforced.ciphers, ctx, &mut out.upstream).map(|()| rows)
        });
        let rows = match encrypted {
            None => {
                out.upstream.extend_from_slice(frame.raw());
                self.queue.owe(Pending::Bind);
                None
            }
            Some(Ok(rows)) => {
                self.queue.owe(Pending::Bind);
                Some(rows)
            }
            Some(Err(r)) => {
                self.refuse_extended(Arc::new(r), out);
                None
            }
        };
        let portal = Portal {
            audited,
            hashes,
            rows,
            subject,
        };
        self.registry.bind(b.portal, portal);
    }

    /// A Describe: the description of a rewritten statement or portal is rewritten.
    fn describe(&mut self, target: Target, name: &str) {
        let pending = match target {
            Target::Statement => match self.prepared(name) {
                Some(p) => Pending::Describe {
                    plan: Some((p.plan.clone(), Arc::from(p.declared.as_slice()))),
                    rows: Some((p.plan.clone(), p.shape.clone())),
                },
                None => Pending::Describe {
                    plan: None,
                    rows: None,
                },
            },
            Target::Portal => Pending::Describe {
                plan: None,
                rows: match self.registry.rows(name) {
                    Some(r) => Some((r.plan.clone(), r.shape.clone())),
                    // A named portal phigate did not rewrite may be a cursor the client's
                    // SQL declared (psycopg's server-side cursors describe it to learn
                    // the types of its FETCHes): described by the origins PostgreSQL
                    // reports, as a FETCH's rows are. The unnamed portal is never one.
                    None if !name.is_empty() && self.guard.is_some() => {
                        Some((Arc::default(), Arc::default()))
                    }
                    None => None,
                },
            },
        };
        self.queue.owe(pending);
    }

    /// An Execute: the rows of a rewritten portal are decrypted.
    fn execute(&mut self, portal: &str, audit: Option<u64>, now: Instant) {
        let ctx = self.ctx();
        let rows = match self.guard {
            Some(_) => self.registry.rows(portal).cloned(),
            None => None,
        };
        if let Some(rows) = &rows
            && rows.plan.copy.as_ref().is_some_and(|c| c.from_client)
            && let Some(enforced) = self.enforced()
        {
            self.copy.client = ClientCopy::after(&rows.plan, &enforced.ciphers, ctx);
        }
        self.queue.owe(Pending::Execute {
            since: now,
            rows,
            audit,
        });
    }

    /// CopyData: encrypted, forwarded or dropped as the COPY's statement decided.
    fn copy_data(&mut self, frame: &Frame, out: &mut Outbound) {
        match &mut self.copy.client {
            ClientCopy::Raw => out.upstream.extend_from_slice(frame.raw()),
            ClientCopy::Discard => {}
            ClientCopy::Encrypt(copy_in) => {
                if let Err(r) = copy_in.data(frame.body(), &mut out.upstream) {
                    self.abort_copy(r, out);
                }
            }
        }
    }

    /// CopyDone (the rest of an encrypted COPY is flushed first) or CopyFail.
    fn copy_end(&mut self, msg: &Frontend<'_>, out: &mut Outbound) {
        let client = std::mem::take(&mut self.copy.client);
        if let (Frontend::CopyDone, ClientCopy::Encrypt(mut copy_in)) = (msg, client)
            && let Err(r) = copy_in.done(&mut out.upstream)
        {
            self.abort_copy(r, out);
            self.copy.client = ClientCopy::Raw;
        }
        self.queue.copy_end();
    }

    /// The statement `name` means for a message sent now: the one an unanswered Parse
    /// gives it (PostgreSQL runs the new statement if it accepts the Parse, and skips what
    /// follows until Sync if it refuses it), else the registered one. True as well when a
    /// Sync lies between that Parse and now: PostgreSQL may then run either statement.
    pub(super) fn statement_now(&self, name: &str) -> (Option<&Statement>, bool) {
        match self.queue.replacing(name) {
            Some((replacement, after_sync)) => (Some(replacement), after_sync),
            None => (self.registry.statement(name), false),
        }
    }

    /// The rewrite statement `name` has once the Parses sent so far are answered.
    fn prepared(&self, name: &str) -> Option<&Prepared> {
        self.statement_now(name).0?.prepared.as_ref()
    }

    /// The message, its statement text (a Query's or a Parse's) written to read the same
    /// whatever `standard_conforming_strings` says, as the server last reported it (see
    /// `crate::sql::conforming`). Analysed and forwarded so.
    fn conforming(&self, frame: Frame) -> Frame {
        if !matches!(frame.tag(), b'Q' | b'P') || memchr::memchr(b'\\', frame.body()).is_none() {
            return frame;
        }
        let escaping = self.params.escaping();
        let mut bytes = bytes::BytesMut::new();
        match Frontend::decode(&frame) {
            Ok(Frontend::Query { sql }) => match crate::sql::conforming(sql, escaping) {
                Some(text) => build::query(&text, &mut bytes),
                None => return frame,
            },
            Ok(Frontend::Parse {
                name,
                sql,
                param_types,
            }) => match crate::sql::conforming(sql, escaping) {
                Some(text) => build::parse(name, &text, &param_types, &mut bytes),
                None => return frame,
            },
            _ => return frame,
        }
        let body = bytes
            .get(crate::protocol::frame::HEADER_LEN..)
            .unwrap_or_default();
        Frame::new(frame.tag(), body)
    }

    /// True when prepared statements and portals are tracked: phigate rewrites statements
    /// (a guard) or audits them.
    fn tracks_statements(&self) -> bool {
        self.guard.is_some() || self.audit.is_some()
    }

    /// Follows what a statement text does to the search path: plain changes outside a
    /// transaction block are followed, any other makes the path unknown.
    fn follow_search_path(&mut self, msg: &Frontend<'_>) {
        use crate::sql::{SearchPath, SearchPathChange as C};
        let change = match msg {
            Frontend::Query { sql } => C::of(sql),
            // a prepared statement changes the path when it runs, not when it is prepared:
            // only a reset to the path the session has already is exact then
            Frontend::Parse { sql, .. } => C::of(sql).map(|c| match c {
                C::Reset | C::ResetAmongOthers => C::ResetAmongOthers,
                C::Set(_) | C::Unknown => C::Unknown,
            }),
            _ => None,
        };
        let Some(change) = change else { return };
        self.search_path = match change {
            _ if self.tx_status != b'I' => SearchPath::Unknown,
            C::Set(path) => SearchPath::Known(path.into()),
            C::Reset => self.startup_path.clone(),
            C::ResetAmongOthers if self.search_path == self.startup_path => return,
            C::ResetAmongOthers | C::Unknown => SearchPath::Unknown,
        };
    }
}

/// The values a Bind gives the parameters that name settings (see
/// [`crate::sql::BoundSetting`]); a parameter it does not supply is PostgreSQL's error.
fn check_bound(
    bound: &[crate::sql::BoundSetting],
    b: &Bind<'_>,
) -> Result<(), crate::sql::Refusal> {
    for setting in bound {
        let value = setting.param.checked_sub(1).and_then(|i| b.params.get(i));
        if let Some(value) = value {
            setting.check(*value)?;
        }
    }
    Ok(())
}
