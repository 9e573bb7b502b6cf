//! The per-connection state machine, free of I/O.
//!
//! A [`Session`] sees every message of an authenticated connection: frontend messages on
//! their way upstream ([`Session::on_frontend`]) and backend messages on their way to the
//! client ([`Session::on_backend`]). It writes what must be sent, and the audit records to
//! write, into an [`Outbound`] that the I/O driver in `crate::server` drains. A statement
//! that must be audited before it runs is *held*: the driver writes its records and hands
//! their seqs back ([`Session::audited`]) before the session forwards it (or refuses it,
//! when the log cannot be written). The session reads no clock: time comes in with every
//! message.
//!
//! Where each concern lives:
//! - `queue`: the responses the client is still owed, in protocol order
//! - `registry`: prepared statements and portals
//! - `frontend` / `backend`: the messages of each direction
//! - `auditing`: the audit records of statements
//! - `refuse`: replacing a statement by an error, in protocol order
//! - `copy`: the COPY in progress
//! - `guard`: the policies and ciphers in force
//! - `budget`: the bulk-read guard's hourly budget and row counts
//! - `delegation`: the end users a delegating service names, and their identity upstream
//!
//! Values are encrypted and decrypted by `crate::encryption`, which the session calls with
//! the ciphers in force.

mod auditing;
mod backend;
mod budget;
mod copy;
mod delegation;
mod frontend;
mod guard;
mod kind;
mod parameters;
mod queue;
mod refuse;
mod registry;

pub use guard::{Enforced, Enforcement, Guard};
pub use kind::CommandKind;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::audit::{AuditKeys, Record};
use crate::encryption::Shape;
use crate::protocol::frame::Frame;
use crate::protocol::value::Context;
use crate::sql::Analysis;
use queue::Queue;
use registry::Registry;

/// What the session asks its driver to do, and what happened, since the driver last
/// drained it.
#[derive(Debug, Default)]
pub struct Outbound {
    /// bytes for the client
    pub client: BytesMut,
    /// bytes for the upstream server
    pub upstream: BytesMut,
    /// completed statements, for metrics
    pub events: Vec<Event>,
    /// audit records to append that nothing waits for (outcomes and the like), in order
    pub audit: Vec<Record>,
    /// audit records a held message waits for (see [`Session::audited`]), appended after
    /// `audit`
    pub gated: Vec<Record>,
}

/// Something that happened in the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A statement completed (successfully or not).
    Statement {
        /// its kind
        kind: CommandKind,
        /// time from forwarding to completion
        elapsed: Duration,
    },
    /// The client broke the protocol; the session is closing.
    ProtocolViolation,
    /// The user declared an emergency (break-glass); the reason is in the audit log only.
    BreakGlass,
    /// phigate refused a statement with this SQLSTATE.
    Refused(&'static str),
    /// The bulk-read guard stopped a statement of the session's user: it passed its row
    /// cap, or (`hourly`) the user's hourly budget was spent.
    RowCap {
        /// the session's user
        user: Arc<str>,
        /// the user's role
        role: Arc<str>,
        /// the hourly budget, not the statement's own cap
        hourly: bool,
    },
}

/// What a session writes to the audit log.
#[derive(Debug, Clone)]
pub struct SessionAudit {
    /// the keys values are hashed with
    pub keys: Arc<AuditKeys>,
    /// the fields every record of the session carries (session, user, role, client
    /// address, application name, TLS), shared with the connection's own records
    pub template: Arc<Record>,
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

/// A client message held until its audit records are written.
#[derive(Debug)]
struct Held {
    frame: Frame,
    analysis: Option<Analysis>,
    /// the end user it runs for (a delegating service's)
    speaker: Option<crate::sql::Subject>,
}

/// The session state machine. See the module documentation.
#[derive(Debug)]
pub struct Session {
    queue: Queue,
    registry: Registry,
    tx_status: u8,
    phase: Phase,
    params: parameters::Parameters,
    guard: Option<Guard>,
    /// the session's search path as far as phigate follows it, and its start-up value
    search_path: crate::sql::SearchPath,
    startup_path: crate::sql::SearchPath,
    /// the result being delivered to a simple Query, when phigate rewrote it
    simple_rows: Option<(Shape, Vec<i16>)>,
    copy: copy::CopyState,
    audit: Option<SessionAudit>,
    held: Option<Held>,
    /// a declared emergency: until when, and why
    emergency: Option<(Instant, String)>,
    /// rows the statement under way delivered that count against the hourly budget
    delivered: u64,
    /// a delegating service's end users
    delegated: Option<delegation::Delegated>,
    /// the end user the client message being handled runs for (a delegating service's)
    speaker: Option<crate::sql::Subject>,
    /// the last client message (Terminate aside) is answered up to ReadyForQuery once
    /// the queue is empty: a Query, FunctionCall or Sync (or none yet)
    rested: bool,
    /// the client ended the session with the upstream session at rest
    reusable: bool,
}

impl Session {
    /// A session whose upstream `application_name` is `upstream_app_name`; ParameterStatus
    /// reports of that value are shown to the client as `client_app_name`. With a `guard`,
    /// statements are analysed and protected columns encrypted and decrypted.
    pub fn new(upstream_app_name: String, client_app_name: String, guard: Option<Guard>) -> Self {
        let delegated = (guard.as_ref())
            .and_then(|g| g.delegation.clone())
            .map(|rules| delegation::Delegated::new(rules, client_app_name.clone()));
        Self {
            delegated,
            speaker: None,
            queue: Queue::default(),
            registry: Registry::default(),
            tx_status: b'I',
            phase: Phase::Open,
            params: parameters::Parameters::new(upstream_app_name, client_app_name),
            guard,
            search_path: crate::sql::SearchPath::Default,
            startup_path: crate::sql::SearchPath::Default,
            simple_rows: None,
            copy: copy::CopyState::default(),
            audit: None,
            held: None,
            emergency: None,
            delivered: 0,
            rested: true,
            reusable: false,
        }
    }

    /// A session whose start-up settings set the search_path to `value`.
    pub(crate) fn with_search_path(mut self, value: &str) -> Self {
        let path = match crate::sql::parse_search_path(value) {
            Some(p) => crate::sql::SearchPath::Known(p.into()),
            None => crate::sql::SearchPath::Unknown,
        };
        self.search_path = path.clone();
        self.startup_path = path;
        self
    }

    /// Audits every statement: its record is written before it is forwarded (the session
    /// holds it until then) and its outcome after; a statement whose record cannot be
    /// written is refused with 58030.
    pub fn with_audit(mut self, audit: SessionAudit) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Notes a parameter the server reported (at login or later); returns the value the
    /// client is shown.
    pub(crate) fn observe_parameter<'a>(&'a mut self, name: &str, value: &'a str) -> &'a str {
        self.params.observe(name, value)
    }

    /// What value conversions need to know of the session.
    fn ctx(&self) -> Context {
        self.params.ctx()
    }

    /// The analyser and ciphers in force; `None` without a guard (nothing is rewritten).
    fn enforced(&self) -> Option<Arc<Enforced>> {
        self.guard.as_ref().map(|g| g.enforcement.current())
    }

    /// Where the session is in its life.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The last transaction status reported by the server (`I`, `T` or `E`).
    pub(crate) fn tx_status(&self) -> u8 {
        self.tx_status
    }

    /// True while the server owes the client a response without further client input: the
    /// idle clock does not run then.
    pub(crate) fn awaiting_upstream(&self) -> bool {
        self.queue.awaiting_upstream()
    }

    /// True when the client ended the session (Terminate) with its upstream session at
    /// rest: every message answered up to a ReadyForQuery, outside a transaction. The
    /// Terminate was not forwarded; the driver may reset the upstream session and keep it
    /// for another client, or must end it.
    pub fn upstream_reusable(&self) -> bool {
        self.reusable
    }

    /// True while a client message waits for its audit records: the driver feeds no more
    /// client messages until it has called [`Session::audited`].
    pub fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// Handles one message from the client.
    pub fn on_frontend(&mut self, frame: Frame, now: Instant, out: &mut Outbound) {
        if self.phase != Phase::Open || self.held.is_some() {
            return;
        }
        if frame.tag() != b'X' {
            // a Query, FunctionCall or Sync is answered up to ReadyForQuery; after any
            // other message the server is mid-way through the extended protocol or a COPY
            self.rested = matches!(frame.tag(), b'Q' | b'F' | b'S');
        }
        if self.params.encoding().is_utf8() {
            return self.frontend(frame, now, out);
        }
        // Text in another client encoding: analysed as UTF-8, forwarded in its encoding.
        let encoding = self.params.encoding();
        let converted = match encoding.frontend_to_utf8(frame.tag(), frame.body()) {
            Ok(None) => return self.frontend(frame, now, out),
            Ok(Some(body)) => Frame::new(frame.tag(), &body),
            Err(_) => return self.encoding_refusal(frame.tag(), now, out),
        };
        self.in_client_encoding(out, |s, out| s.frontend(converted, now, out));
    }

    /// The written audit records of the held message, by seq (or why they could not be
    /// written): the message is now forwarded, or refused with 58030.
    pub fn audited(
        &mut self,
        written: Result<Vec<u64>, crate::audit::AuditError>,
        now: Instant,
        out: &mut Outbound,
    ) {
        let Some(held) = self.held.take() else {
            return;
        };
        if self.params.encoding().is_utf8() {
            return self.release(held, written, now, out);
        }
        self.in_client_encoding(out, |s, out| s.release(held, written, now, out));
    }

    /// Runs `f`, whose upstream bytes are UTF-8, and converts them to the client encoding.
    fn in_client_encoding(&mut self, out: &mut Outbound, f: impl FnOnce(&mut Self, &mut Outbound)) {
        let mark = out.upstream.len();
        f(self, out);
        match self
            .params
            .encoding()
            .upstream_from_utf8(&out.upstream[mark..])
        {
            Ok(bytes) => {
                out.upstream.truncate(mark);
                out.upstream.extend_from_slice(&bytes);
            }
            Err(_) => {
                out.upstream.truncate(mark);
                let e = crate::protocol::build::PgError::fatal(
                    "22P05",
                    "phigate's rewrite of the statement holds a character the client encoding cannot represent",
                )
                .with_hint("use a client encoding that can represent the user's attributes (UTF8)");
                self.fail_upstream(e, out);
            }
        }
    }

    /// Handles one message from the server.
    pub fn on_backend(&mut self, frame: Frame, now: Instant, out: &mut Outbound) {
        if let Err(e) = self.backend(&frame, now, out) {
            tracing::warn!(error = %e, "upstream sent a malformed message");
            self.fail_upstream(
                crate::protocol::build::PgError::fatal(
                    "08P01",
                    format!("upstream protocol violation: {e}"),
                ),
                out,
            );
            return;
        }
        self.settle(out);
    }
}

#[cfg(test)]
mod tests;
