//! The per-connection state machine, free of I/O.
//!
//! A [`Session`] sees every message of an authenticated connection: frontend messages on
//! their way upstream ([`Session::on_frontend`]) and backend messages on their way to the
//! client ([`Session::on_backend`]). It writes what must be sent into an [`Outbound`] that the
//! I/O driver in [`crate::server`] drains, and it keeps the one piece of state every transform
//! depends on: the ordered queue of messages still awaiting their response. That queue is how
//! phigate knows when a session is idle and how an error phigate produces is delivered in
//! protocol order, after the responses to everything the client sent before it.

mod copy;
mod kind;
mod transform;

pub use kind::StatementKind;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::protocol::message::Target;
use crate::protocol::value::Context;
use crate::sql::{Analysis, Analyzer, Plan, Refusal};
use transform::{RowError, Shape};

use crate::protocol::ProtocolError;
use crate::protocol::build::{self, PgError};
use crate::protocol::frame::Frame;
use crate::protocol::message::{self, Frontend};

/// What the session asks its driver to send, and what happened, since the driver last
/// drained it.
#[derive(Debug, Default)]
pub struct Outbound {
    /// bytes for the client
    pub client: BytesMut,
    /// bytes for the upstream server
    pub upstream: BytesMut,
    /// completed statements, for metrics
    pub events: Vec<Event>,
}

/// Something that happened in the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A statement completed (successfully or not).
    Statement {
        /// its kind
        kind: StatementKind,
        /// time from forwarding to completion
        elapsed: Duration,
    },
    /// The client broke the protocol; the session is closing.
    ProtocolViolation,
}

/// What a session enforces: the analyser over the protected tables, and the user's role.
#[derive(Debug, Clone)]
pub struct Guard {
    /// the shared analyser (and its cache)
    pub analyzer: Arc<Analyzer>,
    /// the session user's role
    pub role: Arc<str>,
}

/// A prepared statement phigate rewrote.
#[derive(Debug)]
struct Prepared {
    plan: Arc<Plan>,
    /// the parameter types the client declared
    declared: Vec<u32>,
    /// the result columns, once PostgreSQL described them
    shape: Arc<OnceLock<Shape>>,
}

/// A portal over a rewritten statement: how its rows are decrypted.
#[derive(Debug, Clone)]
struct Rows {
    plan: Arc<Plan>,
    shape: Arc<OnceLock<Shape>>,
    formats: Arc<[i16]>,
}

/// A response the client is still owed, in the order the client asked for it.
#[derive(Debug)]
enum Pending {
    Parse,
    Bind,
    /// `plan` rewrites ParameterDescription; `rows` rewrites RowDescription
    Describe {
        plan: Option<Arc<Plan>>,
        rows: Option<(Arc<Plan>, Arc<OnceLock<Shape>>)>,
    },
    Close,
    Execute {
        since: Instant,
        rows: Option<Rows>,
    },
    Sync,
    /// A simple Query (or FunctionCall): completed by ReadyForQuery; each statement in it
    /// ends with CommandComplete or ErrorResponse.
    Query {
        since: Instant,
        /// phigate rewrote it: result columns may need decrypting
        plan: Option<Arc<Plan>>,
        /// phigate refused it: PostgreSQL raises the error phigate then replaces
        refused: Option<Arc<Refusal>>,
    },
    /// The Describe phigate adds after the Parse of a rewritten statement, to learn its
    /// result columns; its responses are not shown to the client.
    HiddenDescribe(Arc<Plan>, Arc<OnceLock<Shape>>),
    /// A refused extended-protocol message: PostgreSQL answers the replacement with
    /// ParseComplete, BindComplete and CloseComplete (hidden), then the error (replaced).
    Refused {
        refusal: Arc<Refusal>,
        hidden: u8,
    },
    /// The client ended a COPY FROM STDIN before its CopyInResponse arrived (no response).
    CopyEnd,
    /// An error phigate produced, delivered once everything before it has been answered.
    Synthetic {
        msg: Bytes,
        fatal: bool,
    },
}

/// Where the session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// relaying
    Open,
    /// a fatal error is queued: read no more client input, wait for it to be delivered
    Closing,
    /// done: flush what is queued for the client and close both connections
    Closed,
}

/// The session state machine. See the module documentation.
#[derive(Debug)]
pub struct Session {
    pending: VecDeque<Pending>,
    /// entries at the back of `pending` sent since the last Sync/Flush/Query: the server
    /// owes nothing for them until the client flushes
    unflushed: usize,
    /// a COPY FROM STDIN is streaming: the server waits for the client
    copy_in: bool,
    tx_status: u8,
    phase: Phase,
    /// `application_name` as phigate sets it upstream, and as the client asked for it
    upstream_app_name: String,
    client_app_name: String,
    guard: Option<Guard>,
    /// the session's TimeZone is UTC
    utc: bool,
    statements: HashMap<String, Prepared>,
    portals: HashMap<String, Rows>,
    /// the result being delivered to a simple Query, when phigate rewrote it
    simple_rows: Option<(Shape, Vec<i16>)>,
    /// a COPY FROM STDIN into a protected table is streaming: rows are encrypted
    copy_in_rows: Option<copy::CopyIn>,
    /// phigate aborted a COPY FROM STDIN (a value was invalid): the client's remaining data
    /// is dropped, and the server's error is replaced by this one
    copy_refusal: Option<Arc<Refusal>>,
    /// a COPY TO STDOUT of a protected table is streaming (and whether its header is next)
    copy_out: Option<(Arc<Plan>, bool)>,
}

impl Session {
    /// A session whose upstream `application_name` is `upstream_app_name`; ParameterStatus
    /// reports of that value are shown to the client as `client_app_name`. With a `guard`,
    /// statements are analysed and protected columns encrypted and decrypted.
    pub fn new(upstream_app_name: String, client_app_name: String, guard: Option<Guard>) -> Self {
        Self {
            pending: VecDeque::new(),
            unflushed: 0,
            copy_in: false,
            tx_status: b'I',
            phase: Phase::Open,
            upstream_app_name,
            client_app_name,
            guard: guard.filter(|g| !g.analyzer.catalog().is_empty()),
            utc: false,
            statements: HashMap::new(),
            portals: HashMap::new(),
            simple_rows: None,
            copy_in_rows: None,
            copy_refusal: None,
            copy_out: None,
        }
    }

    /// Notes a parameter the server reported (at login or later); returns the value the
    /// client is shown.
    pub fn observe_parameter<'a>(&'a mut self, name: &str, value: &'a str) -> &'a str {
        if name == "TimeZone" {
            self.utc = matches!(
                value,
                "UTC"
                    | "Etc/UTC"
                    | "GMT"
                    | "Etc/GMT"
                    | "UCT"
                    | "Etc/UCT"
                    | "Zulu"
                    | "Universal"
                    | "Etc/Universal"
                    | "Etc/Zulu"
                    | "GMT0"
                    | "Etc/GMT0"
            );
        }
        self.client_parameter(name, value)
    }

    /// Where the session is in its life.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The last transaction status reported by the server (`I`, `T` or `E`).
    pub fn tx_status(&self) -> u8 {
        self.tx_status
    }

    /// True while the server owes the client a response without further client input: the
    /// idle clock does not run then.
    pub fn awaiting_upstream(&self) -> bool {
        !self.copy_in && self.pending.len() > self.unflushed
    }

    /// Rewrites a ParameterStatus value for the client (see [`Session::new`]).
    pub fn client_parameter<'a>(&'a self, name: &str, value: &'a str) -> &'a str {
        if name == "application_name" && value == self.upstream_app_name {
            &self.client_app_name
        } else {
            value
        }
    }

    /// Handles one message from the client.
    pub fn on_frontend(&mut self, frame: Frame, now: Instant, out: &mut Outbound) {
        if self.phase != Phase::Open {
            return;
        }
        let msg = match Frontend::decode(&frame) {
            Ok(m) => m,
            Err(e) => return self.protocol_violation(&e, out),
        };
        if let Some(guard) = self.guard.clone()
            && self.guarded(&guard, &frame, &msg, now, out)
        {
            return;
        }
        match msg {
            Frontend::Query { .. } | Frontend::FunctionCall => {
                self.pending.push_back(Pending::Query {
                    since: now,
                    plan: None,
                    refused: None,
                });
                self.unflushed = 0;
            }
            Frontend::Parse { .. } => self.push_unflushed(Pending::Parse),
            Frontend::Bind(_) => self.push_unflushed(Pending::Bind),
            Frontend::Describe { .. } => self.push_unflushed(Pending::Describe {
                plan: None,
                rows: None,
            }),
            Frontend::Close { .. } => self.push_unflushed(Pending::Close),
            Frontend::Execute { .. } => self.push_unflushed(Pending::Execute {
                since: now,
                rows: None,
            }),
            // PostgreSQL ignores Sync and Flush while a COPY FROM STDIN is streaming.
            Frontend::Sync if !self.copy_in => {
                self.pending.push_back(Pending::Sync);
                self.unflushed = 0;
            }
            Frontend::Flush if !self.copy_in => self.unflushed = 0,
            Frontend::Sync | Frontend::Flush | Frontend::CopyData => {}
            Frontend::CopyDone | Frontend::CopyFail => {
                if self.copy_in {
                    self.copy_in = false;
                } else {
                    self.pending.push_back(Pending::CopyEnd);
                }
                self.unflushed = 0;
            }
            Frontend::Terminate => self.phase = Phase::Closed,
        }
        out.upstream.extend_from_slice(frame.raw());
    }

    /// The frontend messages encryption changes. Returns true when the message was handled
    /// (forwarded in rewritten form, or replaced by a refusal).
    fn guarded(
        &mut self,
        guard: &Guard,
        frame: &Frame,
        msg: &Frontend<'_>,
        now: Instant,
        out: &mut Outbound,
    ) -> bool {
        let ctx = Context { utc: self.utc };
        match msg {
            Frontend::Query { sql } => {
                let (plan, refused) = match guard.analyzer.analyse(&guard.role, ctx, sql) {
                    Analysis::Pass => return false,
                    Analysis::Rewrite(plan) => {
                        build::query(&plan.sql, &mut out.upstream);
                        (Some(plan), None)
                    }
                    Analysis::Refuse(r) => {
                        build::query(transform::REFUSAL_SQL, &mut out.upstream);
                        (None, Some(r))
                    }
                };
                self.pending.push_back(Pending::Query {
                    since: now,
                    plan,
                    refused,
                });
                self.unflushed = 0;
                true
            }
            Frontend::Parse {
                name,
                sql,
                param_types,
            } => {
                let analysis = guard.analyzer.analyse(&guard.role, ctx, sql);
                // A named statement that exists is not replaced (PostgreSQL refuses the
                // Parse); the unnamed one always is.
                let keep = !name.is_empty() && self.statements.contains_key(*name);
                if !keep {
                    self.statements.remove(*name);
                }
                match analysis {
                    Analysis::Pass => return false,
                    Analysis::Rewrite(plan) => {
                        transform::parse(name, &plan, param_types, &mut out.upstream);
                        build::describe(b'S', name, &mut out.upstream);
                        let shape = Arc::new(OnceLock::new());
                        self.push_unflushed(Pending::Parse);
                        self.push_unflushed(Pending::HiddenDescribe(plan.clone(), shape.clone()));
                        if !keep {
                            let declared = param_types.clone();
                            self.statements.insert(
                                (*name).to_owned(),
                                Prepared {
                                    plan,
                                    declared,
                                    shape,
                                },
                            );
                        }
                    }
                    Analysis::Refuse(r) => self.refuse_extended(r, out),
                }
                true
            }
            Frontend::Bind(b) => {
                let Some(prep) = self.statements.get(b.statement) else {
                    self.portals.remove(b.portal);
                    return false;
                };
                let rows = Rows {
                    plan: prep.plan.clone(),
                    shape: prep.shape.clone(),
                    formats: Arc::from(b.result_formats.as_slice()),
                };
                match transform::bind(b, &prep.plan, &prep.declared, ctx, &mut out.upstream) {
                    Ok(()) => {
                        self.portals.insert(b.portal.to_owned(), rows);
                        self.push_unflushed(Pending::Bind);
                    }
                    Err(r) => {
                        self.portals.remove(b.portal);
                        self.refuse_extended(Arc::new(r), out);
                    }
                }
                true
            }
            Frontend::Describe { target, name } => {
                let pending = match target {
                    Target::Statement => match self.statements.get(*name) {
                        Some(p) => Pending::Describe {
                            plan: Some(p.plan.clone()),
                            rows: Some((p.plan.clone(), p.shape.clone())),
                        },
                        None => return false,
                    },
                    Target::Portal => match self.portals.get(*name) {
                        Some(r) => Pending::Describe {
                            plan: None,
                            rows: Some((r.plan.clone(), r.shape.clone())),
                        },
                        None => return false,
                    },
                };
                self.push_unflushed(pending);
                out.upstream.extend_from_slice(frame.raw());
                true
            }
            Frontend::Execute { portal, .. } => {
                let Some(rows) = self.portals.get(*portal).cloned() else {
                    return false;
                };
                self.push_unflushed(Pending::Execute {
                    since: now,
                    rows: Some(rows),
                });
                out.upstream.extend_from_slice(frame.raw());
                true
            }
            Frontend::CopyData if self.copy_refusal.is_some() => true,
            Frontend::CopyData => {
                let Some(copy_in) = &mut self.copy_in_rows else {
                    return false;
                };
                if let Err(r) = copy_in.data(frame.body(), &mut out.upstream) {
                    self.abort_copy(r, out);
                }
                true
            }
            Frontend::CopyDone => {
                if let Some(mut copy_in) = self.copy_in_rows.take()
                    && let Err(r) = copy_in.done(&mut out.upstream)
                {
                    self.abort_copy(r, out);
                }
                false
            }
            Frontend::CopyFail => {
                self.copy_in_rows = None;
                false
            }
            Frontend::Close { target, name } => {
                match target {
                    Target::Statement => {
                        self.statements.remove(*name);
                    }
                    Target::Portal => {
                        self.portals.remove(*name);
                    }
                }
                false
            }
            _ => false,
        }
    }

    /// Ends a COPY FROM STDIN whose data phigate cannot encrypt: PostgreSQL aborts it, and
    /// its error is replaced by `refusal`.
    fn abort_copy(&mut self, refusal: Refusal, out: &mut Outbound) {
        self.copy_in_rows = None;
        self.copy_refusal = Some(Arc::new(refusal));
        build::message(&mut out.upstream, b'f', |b| {
            build::put_cstr(b, transform::REFUSAL_MESSAGE);
        });
    }

    /// Replaces an extended-protocol message by a statement that makes PostgreSQL raise
    /// an error in its place (see [`transform::refusal_extended`]).
    fn refuse_extended(&mut self, refusal: Arc<Refusal>, out: &mut Outbound) {
        transform::refusal_extended(&mut out.upstream);
        self.push_unflushed(Pending::Refused { refusal, hidden: 0 });
    }

    fn push_unflushed(&mut self, p: Pending) {
        self.pending.push_back(p);
        self.unflushed += 1;
    }

    /// Handles one message from the server.
    pub fn on_backend(&mut self, frame: Frame, now: Instant, out: &mut Outbound) {
        if let Err(e) = self.backend(&frame, now, out) {
            tracing::warn!(error = %e, "upstream sent a malformed message");
            self.fail_upstream(
                PgError::fatal("08P01", format!("upstream protocol violation: {e}")),
                out,
            );
            return;
        }
        self.settle(out);
    }

    fn backend(
        &mut self,
        frame: &Frame,
        now: Instant,
        out: &mut Outbound,
    ) -> Result<(), ProtocolError> {
        let body = frame.body();
        match frame.tag() {
            b'1' | b'2' | b'3' => {
                if let Some(Pending::Refused { hidden, .. }) = self.pending.front_mut() {
                    // the replacement's ParseComplete, BindComplete, CloseComplete
                    *hidden += 1;
                    return Ok(());
                }
                self.complete_head();
            }
            b'n' => {
                if let Some(Pending::HiddenDescribe(_, shape)) = self.pending.front() {
                    let _ = shape.set(Arc::from(Vec::new()));
                    self.complete_head();
                    return Ok(());
                }
                self.complete_head();
            }
            b't' => match self.pending.front() {
                Some(Pending::HiddenDescribe(..)) => return Ok(()),
                Some(Pending::Describe {
                    plan: Some(plan), ..
                }) => {
                    transform::parameter_description(body, plan, &mut out.client)?;
                    return Ok(());
                }
                _ => {}
            },
            b'T' => return self.row_description(frame, out),
            b'D' => return self.data_row(frame, out),
            b'C' | b'I' | b's' => {
                self.simple_rows = None;
                self.copy_out = None;
                let kind = match frame.tag() {
                    b'C' => StatementKind::from_tag(message::decode_command_tag(body)?),
                    _ => StatementKind::Other,
                };
                self.copy_in = false;
                self.statement_done(kind, now, out);
            }
            b'E' => {
                let fields = message::decode_error_fields(body)?;
                if matches!(fields.severity, "FATAL" | "PANIC") {
                    // The server ends the connection after this; so do we.
                    self.phase = Phase::Closed;
                }
                self.simple_rows = None;
                let ours = fields.code == "P0001" && fields.message == transform::REFUSAL_MESSAGE;
                let copy_failed =
                    fields.code == "57014" && fields.message.ends_with(transform::REFUSAL_MESSAGE);
                self.copy_out = None;
                let refusal = match self.pending.front() {
                    _ if copy_failed => self.copy_refusal.take(),
                    Some(Pending::Refused { refusal, .. }) => Some(refusal.clone()),
                    Some(Pending::Query {
                        refused: Some(r), ..
                    }) => Some(r.clone()),
                    _ => None,
                };
                let ours = ours || (copy_failed && refusal.is_some());
                let replaced = match refusal {
                    Some(r) if ours => {
                        r.to_error().encode(&mut out.client);
                        true
                    }
                    _ => false,
                };
                self.copy_in = false;
                self.statement_done(StatementKind::Failed, now, out);
                if self.front_is_extended() {
                    // The server skips every message up to the next Sync.
                    while let Some(p) = self.pending.front() {
                        if matches!(p, Pending::Sync) {
                            break;
                        }
                        self.pending.pop_front();
                    }
                }
                if replaced {
                    return Ok(());
                }
            }
            b'Z' => {
                self.tx_status = message::decode_ready_status(body)?;
                self.complete_head();
            }
            b'G' | b'W' => {
                if let Some(plan) = self.copy_plan() {
                    let ctx = Context { utc: self.utc };
                    self.copy_in_rows = Some(copy::CopyIn::new(plan, ctx));
                    self.copy_refusal = None;
                }
                self.copy_started();
            }
            b'H' => {
                self.copy_out = self.copy_plan().map(|p| {
                    let header = p.copy.as_ref().is_some_and(|c| c.format.header);
                    (p, header)
                });
            }
            b'd' => {
                if let Some((plan, header)) = &mut self.copy_out
                    && let Some(copy_plan) = &plan.copy
                {
                    match copy::copy_out_row(body, copy_plan, header, &mut out.client) {
                        Ok(()) => return Ok(()),
                        Err(RowError::Protocol(e)) => return Err(e),
                        Err(e @ RowError::Unreadable { .. }) => {
                            self.unreadable(&e, out);
                            return Ok(());
                        }
                    }
                }
            }
            b'c' => self.copy_out = None,
            b'S' => {
                let (name, value) = message::decode_parameter_status(body)?;
                let shown = self.observe_parameter(name, value);
                if shown != value {
                    build::parameter_status(name, shown, &mut out.client);
                    return Ok(());
                }
            }
            _ => {}
        }
        out.client.extend_from_slice(frame.raw());
        Ok(())
    }

    fn front_is_extended(&self) -> bool {
        matches!(
            self.pending.front(),
            Some(
                Pending::Parse
                    | Pending::Bind
                    | Pending::Describe { .. }
                    | Pending::Close
                    | Pending::Execute { .. }
                    | Pending::HiddenDescribe(..)
                    | Pending::Refused { .. }
            )
        )
    }

    /// A statement finished: an Execute is complete; within a simple query, the next
    /// statement's clock starts.
    fn statement_done(&mut self, kind: StatementKind, now: Instant, out: &mut Outbound) {
        match self.pending.front_mut() {
            Some(Pending::Execute { since, .. }) => {
                let elapsed = now.saturating_duration_since(*since);
                out.events.push(Event::Statement { kind, elapsed });
                if kind != StatementKind::Failed {
                    self.complete_head();
                }
            }
            Some(Pending::Query { since, .. }) => {
                let elapsed = now.saturating_duration_since(*since);
                *since = now;
                out.events.push(Event::Statement { kind, elapsed });
            }
            // A Parse, Bind or COMMIT-at-Sync that failed is a failed statement too.
            Some(_) if kind == StatementKind::Failed => out.events.push(Event::Statement {
                kind,
                elapsed: Duration::ZERO,
            }),
            _ => {}
        }
    }

    /// RowDescription: rewritten when it describes a rewritten statement or portal.
    fn row_description(&mut self, frame: &Frame, out: &mut Outbound) -> Result<(), ProtocolError> {
        let body = frame.body();
        let Some(guard) = &self.guard else {
            self.pass_row_description(frame, out);
            return Ok(());
        };
        let catalog = guard.analyzer.catalog();
        match self.pending.front() {
            Some(Pending::HiddenDescribe(plan, cell)) => {
                let mut scratch = BytesMut::new();
                let fallback = plan.outputs.as_deref();
                let (shape, _) =
                    transform::row_description(body, catalog, &guard.role, fallback, &mut scratch)?;
                let _ = cell.set(shape);
                self.complete_head();
            }
            Some(Pending::Describe {
                rows: Some((plan, cell)),
                ..
            }) => {
                let fallback = plan.outputs.as_deref();
                let (shape, _) = transform::row_description(
                    body,
                    catalog,
                    &guard.role,
                    fallback,
                    &mut out.client,
                )?;
                let _ = cell.set(shape);
                self.complete_head();
            }
            Some(Pending::Query {
                plan: Some(plan), ..
            }) => {
                let fallback = plan.outputs.as_deref();
                let (shape, formats) = transform::row_description(
                    body,
                    catalog,
                    &guard.role,
                    fallback,
                    &mut out.client,
                )?;
                self.simple_rows = Some((shape, formats));
            }
            _ => self.pass_row_description(frame, out),
        }
        Ok(())
    }

    fn pass_row_description(&mut self, frame: &Frame, out: &mut Outbound) {
        if matches!(self.pending.front(), Some(Pending::Describe { .. })) {
            self.complete_head();
        }
        out.client.extend_from_slice(frame.raw());
    }

    /// DataRow: protected values are decrypted when the result comes from a rewritten
    /// statement.
    fn data_row(&mut self, frame: &Frame, out: &mut Outbound) -> Result<(), ProtocolError> {
        let (shape, formats): (&[Option<transform::FieldOut>], &[i16]) = match self.pending.front()
        {
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
            out.client.extend_from_slice(frame.raw());
            return Ok(());
        }
        match transform::data_row(frame.body(), shape, formats, &mut out.client) {
            Ok(()) => Ok(()),
            Err(RowError::Protocol(e)) => Err(e),
            Err(e @ RowError::Unreadable { .. }) => {
                self.unreadable(&e, out);
                Ok(())
            }
        }
    }

    /// A stored value does not decrypt: the result cannot be delivered whole, so the
    /// session ends with FATAL XX001 (the server rolls back the transaction).
    fn unreadable(&mut self, e: &RowError, out: &mut Outbound) {
        tracing::error!(error = %e, "a protected value does not decrypt; ending the session");
        self.fail_upstream(
            PgError::fatal("XX001", e.to_string()).with_hint(
                "the stored value was altered or copied from another column; \
                 restore it from a backup",
            ),
            out,
        );
    }

    /// The plan of the COPY the head of the queue runs, if phigate rewrote it.
    fn copy_plan(&self) -> Option<Arc<Plan>> {
        let plan = match self.pending.front()? {
            Pending::Query { plan, .. } => plan.clone()?,
            Pending::Execute {
                rows: Some(rows), ..
            } => rows.plan.clone(),
            _ => return None,
        };
        plan.copy.is_some().then_some(plan)
    }

    /// CopyInResponse: the server now reads COPY data, ignoring any Sync the client
    /// pipelined before the end of its data.
    fn copy_started(&mut self) {
        let mut i = 1;
        while i < self.pending.len() {
            match self.pending[i] {
                Pending::CopyEnd => {
                    // The client already finished sending its data.
                    self.pending.remove(i);
                    return;
                }
                Pending::Sync => {
                    self.pending.remove(i);
                    self.unflushed = self.unflushed.min(self.pending.len());
                }
                _ => i += 1,
            }
        }
        self.copy_in = true;
    }

    fn complete_head(&mut self) {
        self.pending.pop_front();
        self.unflushed = self.unflushed.min(self.pending.len());
    }

    /// Delivers the synthetic messages that have reached the head of the queue.
    fn settle(&mut self, out: &mut Outbound) {
        loop {
            match self.pending.front() {
                Some(Pending::CopyEnd) => {}
                Some(Pending::Synthetic { msg, fatal }) => {
                    out.client.extend_from_slice(msg);
                    if *fatal {
                        self.phase = Phase::Closed;
                        self.pending.clear();
                        return;
                    }
                }
                _ => return,
            }
            self.pending.pop_front();
        }
    }

    /// Ends the session with a FATAL error, delivered after the responses the client is
    /// still owed. Nothing more is read from the client.
    pub fn terminate(&mut self, err: &PgError, out: &mut Outbound) {
        if self.phase != Phase::Open {
            return;
        }
        let mut msg = BytesMut::new();
        err.encode(&mut msg);
        self.pending.push_back(Pending::Synthetic {
            msg: msg.freeze(),
            fatal: true,
        });
        if self.unflushed > 0 {
            // Make the server answer what the client sent without a Sync.
            build::flush(&mut out.upstream);
            self.unflushed = 0;
        }
        self.phase = Phase::Closing;
        self.settle(out);
    }

    /// The client broke the protocol: 08P01, then the connection is closed.
    pub fn protocol_violation(&mut self, err: &ProtocolError, out: &mut Outbound) {
        tracing::warn!(error = %err, "client protocol violation");
        out.events.push(Event::ProtocolViolation);
        self.terminate(
            &PgError::fatal("08P01", format!("protocol violation: {err}"))
                .with_hint("the client sent a message phigate cannot accept; reconnect"),
            out,
        );
    }

    /// The upstream connection failed or misbehaved: the client gets `err` at once (nothing
    /// more will come from the server) and the session closes.
    pub fn fail_upstream(&mut self, err: PgError, out: &mut Outbound) {
        if self.phase == Phase::Closed {
            return;
        }
        err.encode(&mut out.client);
        self.pending.clear();
        self.phase = Phase::Closed;
    }
}

#[cfg(test)]
mod tests;
