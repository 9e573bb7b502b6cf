//! The per-connection state machine, free of I/O.
//!
//! A [`Session`] sees every message of an authenticated connection: frontend messages on
//! their way upstream ([`Session::on_frontend`]) and backend messages on their way to the
//! client ([`Session::on_backend`]). It writes what must be sent into an [`Outbound`] that the
//! I/O driver in [`crate::server`] drains, and it keeps the one piece of state every transform
//! depends on: the ordered queue of messages still awaiting their response. That queue is how
//! phigate knows when a session is idle and how an error phigate produces is delivered in
//! protocol order, after the responses to everything the client sent before it.

mod kind;

pub use kind::StatementKind;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

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

/// A response the client is still owed, in the order the client asked for it.
#[derive(Debug)]
enum Pending {
    Parse,
    Bind,
    Describe,
    Close,
    Execute {
        since: Instant,
    },
    Sync,
    /// A simple Query (or FunctionCall): completed by ReadyForQuery; each statement in it
    /// ends with CommandComplete or ErrorResponse.
    Query {
        since: Instant,
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
}

impl Session {
    /// A session whose upstream `application_name` is `upstream_app_name`; ParameterStatus
    /// reports of that value are shown to the client as `client_app_name`.
    pub fn new(upstream_app_name: String, client_app_name: String) -> Self {
        Self {
            pending: VecDeque::new(),
            unflushed: 0,
            copy_in: false,
            tx_status: b'I',
            phase: Phase::Open,
            upstream_app_name,
            client_app_name,
        }
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
        match msg {
            Frontend::Query { .. } | Frontend::FunctionCall => {
                self.pending.push_back(Pending::Query { since: now });
                self.unflushed = 0;
            }
            Frontend::Parse { .. } => self.push_unflushed(Pending::Parse),
            Frontend::Bind(_) => self.push_unflushed(Pending::Bind),
            Frontend::Describe { .. } => self.push_unflushed(Pending::Describe),
            Frontend::Close { .. } => self.push_unflushed(Pending::Close),
            Frontend::Execute { .. } => self.push_unflushed(Pending::Execute { since: now }),
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
            b'1' | b'2' | b'3' | b'n' => self.complete_head(),
            b'T' => {
                if matches!(self.pending.front(), Some(Pending::Describe)) {
                    self.complete_head();
                }
            }
            b'C' | b'I' | b's' => {
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
            }
            b'Z' => {
                self.tx_status = message::decode_ready_status(body)?;
                self.complete_head();
            }
            b'G' | b'W' => self.copy_started(),
            b'S' => {
                let (name, value) = message::decode_parameter_status(body)?;
                let shown = self.client_parameter(name, value);
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
                    | Pending::Describe
                    | Pending::Close
                    | Pending::Execute { .. }
            )
        )
    }

    /// A statement finished: an Execute is complete; within a simple query, the next
    /// statement's clock starts.
    fn statement_done(&mut self, kind: StatementKind, now: Instant, out: &mut Outbound) {
        match self.pending.front_mut() {
            Some(Pending::Execute { since }) => {
                let elapsed = now.saturating_duration_since(*since);
                out.events.push(Event::Statement { kind, elapsed });
                if kind != StatementKind::Failed {
                    self.complete_head();
                }
            }
            Some(Pending::Query { since }) => {
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
