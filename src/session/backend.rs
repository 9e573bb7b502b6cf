//! Messages from the server: each answers the head of the queue. Descriptions and rows of
//! rewritten statements are decrypted on their way to the client, the responses to
//! phigate's own messages are hidden, and PostgreSQL's errors for refused statements are
//! replaced by phigate's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::queue::Pending;
use super::refuse::REFUSAL_MESSAGE;
use super::{CommandKind, Event, Outbound, Phase, Session};
use crate::audit::Decision;
use crate::encryption::{self, CopyOut, FieldOut, RowError};
use crate::protocol::ProtocolError;
use crate::protocol::backend::{Backend, ErrorFields, decode_parameter_status};
use crate::protocol::build;
use crate::protocol::frame::Frame;
use crate::sql::Plan;

impl Session {
    pub(super) fn backend(
        &mut self,
        frame: &Frame,
        now: Instant,
        out: &mut Outbound,
    ) -> Result<(), ProtocolError> {
        let msg = Backend::decode(frame)?;
        if let Some(Pending::Hidden(hidden)) = self.queue.front()
            && self.hidden_answer(*hidden, &msg, frame, out)
        {
            return Ok(());
        }
        let forward = match msg {
            Backend::ParseComplete | Backend::BindComplete | Backend::CloseComplete => {
                self.completion()
            }
            Backend::NoData => self.no_data(),
            Backend::ParameterDescription(body) => self.parameter_description(body, out)?,
            Backend::RowDescription(body) => self.row_description(body, out)?,
            Backend::DataRow(body) => {
                self.row_delivered();
                self.data_row(body, out)?
            }
            Backend::CommandComplete(tag) => {
                let rows = tag.rsplit(' ').next().and_then(|n| n.parse().ok());
                self.command_complete(CommandKind::from_tag(tag), rows, now, out);
                true
            }
            Backend::EmptyQuery | Backend::PortalSuspended => {
                self.command_complete(CommandKind::Other, None, now, out);
                true
            }
            Backend::Error(fields) => self.error(&fields, now, out),
            Backend::ReadyForQuery(status) => {
                self.ready_for_query(status, out);
                true
            }
            Backend::CopyIn => {
                self.queue.copy_started();
                true
            }
            Backend::CopyOut => {
                let ctx = self.ctx();
                self.copy.out = match (self.copy_plan(), self.enforced()) {
                    (Some(p), Some(e)) => Some(CopyOut::new(&p, &e.ciphers, ctx)),
                    _ => None,
                };
                true
            }
            Backend::CopyData(body) => {
                self.row_delivered();
                self.copy_out_data(body, out)?
            }
            Backend::CopyDone => {
                self.copy.out = None;
                true
            }
            Backend::ParameterStatus(body) => self.parameter_status(body, out),
            // login messages never come in a session: passed on as they are
            Backend::Other | Backend::Authentication(_) | Backend::BackendKeyData(..) => true,
        };
        if forward {
            // the server's errors and notices may print a row's or a key's envelopes
            let shown = match frame.tag() {
                b'E' | b'N' if self.guard.is_some() => encryption::withheld(frame.raw()),
                _ => None,
            };
            out.client
                .extend_from_slice(shown.as_deref().unwrap_or(frame.raw()));
        }
        Ok(())
    }

    /// ReadyForQuery: the transaction status; a simple query's statements after a failed
    /// one did not run.
    fn ready_for_query(&mut self, status: u8, out: &mut Outbound) {
        self.tx_status = status;
        if let Some(Pending::Query { audit, .. }) = self.queue.front_mut() {
            let skipped = std::mem::take(audit);
            self.audit_not_run(skipped, out);
        }
        self.queue.complete_head();
    }

    /// ParseComplete, BindComplete, CloseComplete; false when hidden (the replacement of a
    /// refused message).
    fn completion(&mut self) -> bool {
        if let Some(Pending::Refused { hidden, .. }) = self.queue.front_mut() {
            *hidden += 1;
            return false;
        }
        // PostgreSQL accepted the Parse of a name SQL had deallocated: the new statement
        // takes its place.
        if let Some(replacement) = self.queue.take_replacement() {
            let (name, statement) = *replacement;
            self.registry.define(&name, statement);
        }
        self.queue.complete_head();
        true
    }

    /// NoData; false when it answers phigate's own Describe.
    fn no_data(&mut self) -> bool {
        let hidden = match self.queue.front() {
            Some(Pending::HiddenDescribe(_, shape)) => {
                let _ = shape.set(Arc::from(Vec::new()));
                true
            }
            _ => false,
        };
        self.queue.complete_head();
        !hidden
    }

    /// ParameterDescription: hidden after phigate's own Describe, rewritten for a
    /// rewritten statement (encrypted parameters shown with their logical types).
    fn parameter_description(
        &mut self,
        body: &[u8],
        out: &mut Outbound,
    ) -> Result<bool, ProtocolError> {
        match self.queue.front() {
            Some(Pending::HiddenDescribe(..)) => Ok(false),
            Some(Pending::Describe {
                plan: Some((plan, declared)),
                ..
            }) => {
                encryption::parameter_description(body, plan, declared, &mut out.client)?;
                Ok(false)
            }
            _ => Ok(true),
        }
    }

    /// CommandComplete, EmptyQueryResponse, PortalSuspended.
    fn command_complete(
        &mut self,
        kind: CommandKind,
        rows: Option<u64>,
        now: Instant,
        out: &mut Outbound,
    ) {
        self.simple_rows = None;
        self.copy.out = None;
        self.queue.copy_in = false;
        self.statement_done(kind, rows, None, now, out);
    }

    /// ErrorResponse: a refusal phigate caused is replaced by phigate's error. Returns
    /// whether the server's error goes to the client.
    fn error(&mut self, fields: &ErrorFields<'_>, now: Instant, out: &mut Outbound) -> bool {
        if matches!(fields.severity, "FATAL" | "PANIC") {
            // The server ends the connection after this; so do we.
            self.phase = Phase::Closed;
        }
        self.simple_rows = None;
        self.copy.out = None;
        let ours = fields.code == "P0001" && fields.message == REFUSAL_MESSAGE;
        let copy_failed = fields.code == "57014" && fields.message.ends_with(REFUSAL_MESSAGE);
        let refusal = match self.queue.front() {
            _ if copy_failed => self.copy.refusal.take(),
            Some(Pending::Refused { refusal, .. }) => Some(refusal.clone()),
            Some(Pending::Query {
                refused: Some(r), ..
            }) => Some(r.clone()),
            _ => None,
        };
        let replaced = match refusal {
            Some(r) if ours || copy_failed => {
                r.to_error().encode(&mut out.client);
                true
            }
            _ => false,
        };
        self.queue.copy_in = false;
        let code = fields.code.to_owned();
        let decision = match self.stopped_at_cap(fields, out) {
            true => Decision::Capped,
            false => Decision::of_outcome(Some(&code)),
        };
        let failure = Some((code.as_str(), decision));
        self.statement_done(CommandKind::Failed, None, failure, now, out);
        self.queue.skip_after_error();
        !replaced
    }

    /// CopyData from the server: decrypted in a COPY TO STDOUT of a protected table.
    fn copy_out_data(&mut self, body: &[u8], out: &mut Outbound) -> Result<bool, ProtocolError> {
        let Some(copy_out) = &mut self.copy.out else {
            return Ok(true);
        };
        match copy_out.data(body, &mut out.client) {
            Ok(()) => {}
            Err(RowError::Protocol(e)) => return Err(e),
            Err(e @ RowError::Unreadable { .. }) => self.unreadable(&e, out),
        }
        Ok(false)
    }

    /// ParameterStatus: `application_name` is shown as the client set it. A value in a
    /// client encoding other than UTF-8 is passed on as it is.
    fn parameter_status(&mut self, body: &[u8], out: &mut Outbound) -> bool {
        let Ok((name, value)) = decode_parameter_status(body) else {
            return true;
        };
        let shown = self.params.observe(name, value);
        if shown == value {
            return true;
        }
        build::parameter_status(name, shown, &mut out.client);
        false
    }

    /// A statement finished: an Execute is complete; within a simple query, the next
    /// statement's clock starts.
    fn statement_done(
        &mut self,
        kind: CommandKind,
        rows: Option<u64>,
        failure: Option<(&str, Decision)>,
        now: Instant,
        out: &mut Outbound,
    ) {
        self.count_delivered(now);
        let (elapsed, begin) = match self.queue.front_mut() {
            Some(Pending::Execute { since, audit, .. }) => {
                (now.saturating_duration_since(*since), audit.take())
            }
            Some(Pending::Query { since, audit, .. }) => {
                let elapsed = now.saturating_duration_since(*since);
                *since = now;
                (elapsed, audit.pop_front())
            }
            // A Parse, Bind or COMMIT-at-Sync that failed is a failed statement too.
            Some(_) if kind == CommandKind::Failed => {
                out.events.push(Event::Statement {
                    kind,
                    elapsed: Duration::ZERO,
                });
                return;
            }
            _ => return,
        };
        out.events.push(Event::Statement { kind, elapsed });
        if let Some(begin) = begin {
            self.audit_end(begin, rows, failure, elapsed, out);
        }
        if kind != CommandKind::Failed
            && matches!(self.queue.front(), Some(Pending::Execute { .. }))
        {
            self.queue.complete_head();
        }
    }

    /// RowDescription: rewritten when it describes a rewritten statement or portal.
    fn row_description(&mut self, body: &[u8], out: &mut Outbound) -> Result<bool, ProtocolError> {
        // The statement it describes, and whether the client sees the description.
        let described = match self.queue.front() {
            Some(Pending::HiddenDescribe(plan, _)) => Some((plan.clone(), false)),
            Some(Pending::Describe {
                rows: Some((plan, _)),
                ..
            })
            | Some(Pending::Query {
                plan: Some(plan), ..
            }) => Some((plan.clone(), true)),
            _ => None,
        };
        let (Some(guard), Some((plan, shown))) = (&self.guard, described) else {
            if matches!(self.queue.front(), Some(Pending::Describe { .. })) {
                self.queue.complete_head();
            }
            return Ok(true);
        };
        let mut hidden = BytesMut::new();
        let enforced = guard.enforcement.current();
        let (shape, formats) = encryption::row_description(
            body,
            (enforced.analyzer.catalog(), &enforced.ciphers),
            plan.subject.as_ref().unwrap_or(&guard.subject),
            plan.outputs.as_deref(),
            if shown { &mut out.client } else { &mut hidden },
        )?;
        match self.queue.front() {
            Some(
                Pending::HiddenDescribe(_, cell)
                | Pending::Describe {
                    rows: Some((_, cell)),
                    ..
                },
            ) => {
                let _ = cell.set(shape);
                self.queue.complete_head();
            }
            // a simple Query: its rows follow
            _ => self.simple_rows = Some((shape, formats)),
        }
        Ok(false)
    }

    /// DataRow: protected values are decrypted when the result comes from a rewritten
    /// statement.
    fn data_row(&mut self, body: &[u8], out: &mut Outbound) -> Result<bool, ProtocolError> {
        let (shape, formats): (&[Option<FieldOut>], &[i16]) = match self.queue.front() {
            Some(Pending::Query { .. }) => match &self.simple_rows {
                Some((shape, formats)) => (shape, formats),
                None => (&[], &[]),
            },
            Some(Pending::Execute {
                rows: Some(rows), ..
            }) => match rows.shape.get() {
                Some(shape) => (shape, &rows.formats),
                None => (&[], &[]),
            },
            _ => (&[], &[]),
        };
        if shape.is_empty() {
            return Ok(true);
        }
        match encryption::data_row(body, shape, formats, self.ctx(), &mut out.client) {
            Ok(()) => Ok(false),
            Err(RowError::Protocol(e)) => Err(e),
            Err(e @ RowError::Unreadable { .. }) => {
                self.unreadable(&e, out);
                Ok(false)
            }
        }
    }

    /// The plan of the COPY the head of the queue runs, if phigate rewrote it.
    fn copy_plan(&self) -> Option<Arc<Plan>> {
        let plan = match self.queue.front()? {
            Pending::Query { plan, .. } => plan.clone()?,
            Pending::Execute {
                rows: Some(rows), ..
            } => rows.plan.clone(),
            _ => return None,
        };
        plan.copy.is_some().then_some(plan)
    }
}
