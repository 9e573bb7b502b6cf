//! Refusals: a statement phigate will not run is replaced by one that makes PostgreSQL
//! raise an error in its place, so that the transaction aborts as PostgreSQL would abort
//! it and every response keeps its order; the error reaching the client is phigate's.
//! Fatal errors end the session once everything before them has been answered.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::queue::Pending;
use super::{Event, Outbound, Phase, Session, copy};
use crate::protocol::ProtocolError;
use crate::protocol::build::{self, PgError};
use crate::sql::Refusal;

/// The SQL PostgreSQL runs in place of a refused statement: it raises an error phigate
/// recognises (and replaces with its own), so the transaction aborts as PostgreSQL would
/// abort it and responses keep their order.
pub(super) const REFUSAL_SQL: &str = "DO $phigate$BEGIN RAISE EXCEPTION USING ERRCODE = 'P0001', \
     MESSAGE = 'phigate refusal'; END$phigate$";

/// The message PostgreSQL raises for [`REFUSAL_SQL`].
pub(super) const REFUSAL_MESSAGE: &str = "phigate refusal";

/// The prepared statement name the extended-protocol refusal uses (closed at once).
const REFUSAL_STATEMENT: &str = "\u{1}phigate_refusal";

/// Parse, Bind, Close, Execute of [`REFUSAL_SQL`]: answered by ParseComplete, BindComplete,
/// CloseComplete, then the error.
pub(super) fn refusal_extended(out: &mut BytesMut) {
    build::parse(REFUSAL_STATEMENT, REFUSAL_SQL, &[], out);
    build::bind_empty("", REFUSAL_STATEMENT, out);
    build::close(b'S', REFUSAL_STATEMENT, out);
    build::execute("", 0, out);
}

/// The refusal of a statement the audit log cannot record.
pub(super) fn audit_refusal() -> Refusal {
    Refusal {
        code: "58030",
        message: "the audit log cannot be written, so the statement was not run".into(),
        hint: "phigate runs no statement it cannot audit; ask the administrator to restore \
               the audit directory"
            .into(),
    }
}

/// The refusal of a fast-path call to any function but the large-object ones (it names the
/// function by OID, so the statement firewall cannot see which one runs).
pub(super) fn fast_path_refusal() -> Refusal {
    Refusal {
        code: "42501",
        message: "phigate allows fast-path function calls only to the large-object functions"
            .into(),
        hint: "call the function in a SELECT".into(),
    }
}

/// The refusal of an emergency declared in the extended protocol.
pub(super) fn extended_declare_refusal() -> Refusal {
    Refusal {
        code: "0A000",
        message: "an emergency is declared with a simple query".into(),
        hint: "send SET phigate.break_glass = '<reason>' as a simple query (psql does)".into(),
    }
}

/// The refusal of `SET phigate.end_user` in the extended protocol.
pub(super) fn extended_end_user_refusal() -> Refusal {
    Refusal {
        code: "0A000",
        message: "SET phigate.end_user is sent as a simple query".into(),
        hint: "send it as a simple query (psql, batch_execute; JDBC: Statement.execute with preferQueryMode=simple), or name the end user in a comment or the application_name".into(),
    }
}

/// The refusal of an emergency declared for a delegated end user.
pub(super) fn delegated_declare_refusal() -> Refusal {
    Refusal {
        code: "0A000",
        message: "an emergency is declared from a personal login, not through a delegating service".into(),
        hint: "log in as yourself to declare it: in a delegating service's session it would outlast the end user".into(),
    }
}

/// The refusal of a rewritten statement with no ciphers to encrypt it with. A plan only
/// comes from the session's guard, which holds them, so this never reaches a client; it
/// keeps a statement from going upstream unencrypted, or unanswered, were that to change.
pub(super) fn no_ciphers_refusal() -> Refusal {
    Refusal {
        code: "XX000",
        message: "phigate has no encryption keys in force for this session".into(),
        hint: "reconnect; if it persists, report it as a phigate bug".into(),
    }
}

/// The refusal of a Bind to a statement name whose new Parse PostgreSQL has not answered
/// yet, with a Sync between them: phigate cannot tell which statement it would bind.
pub(super) fn unanswered_parse_refusal() -> Refusal {
    Refusal {
        code: "0A000",
        message: "the statement was prepared again under the same name and PostgreSQL has not answered that Parse yet".into(),
        hint: "wait for the Parse's answer (or send the Bind before the Sync) when re-preparing a name after DEALLOCATE".into(),
    }
}

impl Session {
    /// A client message whose text is not valid in the client encoding (or in one phigate
    /// cannot convert): refused in protocol order, as PostgreSQL refuses it.
    pub(super) fn encoding_refusal(&mut self, tag: u8, now: Instant, out: &mut Outbound) {
        let refusal = Refusal {
            code: "22021",
            message: format!(
                "invalid byte sequence for the client encoding, or a client encoding phigate cannot convert ({:?})",
                self.params.encoding()
            ),
            hint: "send text valid in the client encoding; phigate converts UTF8, LATIN1-10, ISO_8859_5-8, WIN866, WIN874, WIN1250-1258, KOI8R/U, EUC_JP, EUC_KR, UHC, EUC_CN, GBK, GB18030, BIG5 and SJIS".into(),
        };
        match tag {
            b'Q' => self.refuse_query(Arc::new(refusal), now, out),
            _ => self.refuse_extended(Arc::new(refusal), out),
        }
    }

    /// Replaces a simple Query (or function call) by a statement that makes PostgreSQL
    /// raise `refusal` in its place, in protocol order.
    pub(super) fn refuse_query(&mut self, refusal: Arc<Refusal>, now: Instant, out: &mut Outbound) {
        out.events.push(Event::Refused(refusal.code));
        build::query(REFUSAL_SQL, &mut out.upstream);
        self.copy.client = copy::ClientCopy::Discard;
        self.queue.owe_now(Pending::Query {
            since: now,
            plan: None,
            refused: Some(refusal),
            audit: Default::default(),
        });
    }

    /// Replaces an extended-protocol message by a statement that makes PostgreSQL raise
    /// an error in its place (see [`refusal_extended`]).
    pub(super) fn refuse_extended(&mut self, refusal: Arc<Refusal>, out: &mut Outbound) {
        out.events.push(Event::Refused(refusal.code));
        refusal_extended(&mut out.upstream);
        self.copy.client = copy::ClientCopy::Discard;
        self.queue.owe(Pending::Refused { refusal, hidden: 0 });
    }

    /// Ends a COPY FROM STDIN whose data phigate cannot encrypt: PostgreSQL aborts it, and
    /// its error is replaced by `refusal`.
    pub(super) fn abort_copy(&mut self, refusal: Refusal, out: &mut Outbound) {
        self.copy.client = copy::ClientCopy::Discard;
        self.copy.refusal = Some(Arc::new(refusal));
        build::copy_fail(REFUSAL_MESSAGE, &mut out.upstream);
    }

    /// Delivers the synthetic messages that have reached the head of the queue.
    pub(super) fn settle(&mut self, out: &mut Outbound) {
        if self.queue.settle(&mut out.client) {
            self.phase = Phase::Closed;
        }
    }

    /// Ends the session with a FATAL error, delivered after the responses the client is
    /// still owed. Nothing more is read from the client.
    pub fn terminate(&mut self, err: &PgError, out: &mut Outbound) {
        if self.phase != Phase::Open {
            return;
        }
        if err.code == "57P05" {
            self.audit_event(crate::audit::Kind::IdleTimeout, out);
        }
        let mut msg = BytesMut::new();
        err.encode(&mut msg);
        self.queue.push_synthetic(msg.freeze(), true);
        if self.queue.has_unflushed() {
            // Make the server answer what the client sent without a Sync.
            build::flush(&mut out.upstream);
            self.queue.flush();
        }
        self.phase = Phase::Closing;
        self.settle(out);
    }

    /// The client broke the protocol: 08P01, then the connection is closed.
    pub(crate) fn protocol_violation(&mut self, err: &ProtocolError, out: &mut Outbound) {
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
    pub(crate) fn fail_upstream(&mut self, err: PgError, out: &mut Outbound) {
        if self.phase == Phase::Closed {
            return;
        }
        err.encode(&mut out.client);
        self.queue.clear();
        self.phase = Phase::Closed;
    }

    /// A stored value does not decrypt: the result cannot be delivered whole, so the
    /// session ends with FATAL XX001 (the server rolls back the transaction).
    pub(super) fn unreadable(&mut self, e: &crate::encryption::RowError, out: &mut Outbound) {
        tracing::error!(error = %e, "a protected value does not decrypt; ending the session");
        self.fail_upstream(
            PgError::fatal("XX001", e.to_string()).with_hint(
                "the stored value was altered or copied from another column; \
                 restore it from a backup",
            ),
            out,
        );
    }
}
