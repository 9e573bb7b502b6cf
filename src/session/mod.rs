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
mod copy_binary;
mod kind;
mod transform;

pub use kind::StatementKind;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::audit::{Auditor, Decision, Kind, Record, Redacted, redact};
use crate::protocol::encoding::ClientEncoding;
use crate::protocol::message::Target;
use crate::protocol::value::Context;
use crate::sql::{Analysis, Enforcement, Plan, Refusal, Subject};
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
    /// The user declared an emergency (break-glass); the reason is in the audit log only.
    BreakGlass,
    /// phigate refused a statement with this SQLSTATE.
    Refused(&'static str),
}

/// What a session enforces: the policies in force (firewall, column access, row policies,
/// encryption) for its user.
#[derive(Debug, Clone)]
pub struct Guard {
    /// the policies in force, replaced whole when they reload
    pub enforcement: Arc<Enforcement>,
    /// the session's user and role (the emergency flag is the session's to keep)
    pub subject: Subject,
    /// how long a declared emergency lasts
    pub break_glass_for: Duration,
    /// tags the emergency setting so that only this backend's native policies accept it
    pub session_key: Arc<crate::policy::session_key::SessionKey>,
    /// the upstream backend's process id
    pub backend_pid: i32,
}

/// What a session writes to the audit log.
#[derive(Debug, Clone)]
pub struct SessionAudit {
    /// the instance's log
    pub auditor: Arc<Auditor>,
    /// the fields every record of the session carries (session, user, role, client
    /// address, application name, TLS)
    pub template: Record,
}

/// The refusal of a statement the audit log cannot record.
fn audit_refusal() -> Refusal {
    Refusal {
        code: "58030",
        message: "the audit log cannot be written, so the statement was not run".into(),
        hint: "phigate runs no statement it cannot audit; ask the administrator to restore \
               the audit directory"
            .into(),
    }
}

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

/// The refusal of a fast-path call to any other function (it names the function by OID, so
/// the statement firewall cannot see which one runs).
fn fast_path_refusal() -> Refusal {
    Refusal {
        code: "42501",
        message: "phigate allows fast-path function calls only to the large-object functions"
            .into(),
        hint: "call the function in a SELECT".into(),
    }
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

/// What phigate does with the COPY data a client sends, decided when the client sends the
/// statement it belongs to, never by the server's answer: a client may send its data before
/// CopyInResponse, and that data must meet the same encryption.
#[derive(Debug)]
enum ClientCopy {
    /// not a COPY into a protected table: forwarded as it is
    Raw,
    /// a COPY FROM STDIN into a protected table: rows are encrypted
    Encrypt(copy::CopyIn),
    /// the statement was refused, or phigate aborted the COPY: the data is dropped
    Discard,
}

/// A response the client is still owed, in the order the client asked for it.
#[derive(Debug)]
enum Pending {
    Parse,
    Bind,
    /// `plan` rewrites ParameterDescription; `rows` rewrites RowDescription
    Describe {
        plan: Option<(Arc<Plan>, Arc<[u32]>)>,
        rows: Option<(Arc<Plan>, Arc<OnceLock<Shape>>)>,
    },
    Close,
    Execute {
        since: Instant,
        rows: Option<Rows>,
        /// the seq of its audit record
        audit: Option<u64>,
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
        /// the seqs of its statements' audit records, in order
        audit: VecDeque<u64>,
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
    /// the application_name the client was last shown (`SHOW application_name` answers it)
    shown_app_name: String,
    guard: Option<Guard>,
    /// the session's TimeZone is UTC
    utc: bool,
    /// the session's client encoding (from the server's ParameterStatus)
    encoding: ClientEncoding,
    /// the session's search path as far as phigate follows it, and its start-up value
    search_path: crate::sql::SearchPath,
    startup_path: crate::sql::SearchPath,
    /// the server is skipping the client's messages until its next Sync (an error in the
    /// extended protocol arrived before that Sync did): they are owed no response
    skipping: bool,
    statements: HashMap<String, Prepared>,
    portals: HashMap<String, Rows>,
    /// the result being delivered to a simple Query, when phigate rewrote it
    simple_rows: Option<(Shape, Vec<i16>)>,
    /// what becomes of the COPY data the client sends next: it follows the client's own
    /// order (a client may send its data before the server's CopyInResponse)
    client_copy: ClientCopy,
    /// phigate aborted a COPY FROM STDIN (a value was invalid): the server's error is
    /// replaced by this one
    copy_refusal: Option<Arc<Refusal>>,
    /// a COPY TO STDOUT of a protected table is streaming (and whether its header is next)
    copy_out: Option<copy::CopyOut>,
    audit: Option<SessionAudit>,
    /// audited prepared statements' text, by name
    audit_statements: HashMap<String, Arc<Redacted>>,
    /// audited portals: their statement's text and the hashes of their parameters
    audit_portals: HashMap<String, (Option<Arc<Redacted>>, Vec<String>)>,
    /// audit records written for the message being handled, for its pending entry
    audit_query: VecDeque<u64>,
    audit_execute: Option<u64>,
    /// a declared emergency: until when, and why
    emergency: Option<(Instant, String)>,
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
            shown_app_name: client_app_name.clone(),
            upstream_app_name,
            client_app_name,
            guard,
            utc: false,
            encoding: ClientEncoding::Utf8,
            search_path: crate::sql::SearchPath::Default,
            startup_path: crate::sql::SearchPath::Default,
            skipping: false,
            statements: HashMap::new(),
            portals: HashMap::new(),
            simple_rows: None,
            client_copy: ClientCopy::Raw,
            copy_refusal: None,
            copy_out: None,
            audit: None,
            audit_statements: HashMap::new(),
            audit_portals: HashMap::new(),
            audit_query: VecDeque::new(),
            audit_execute: None,
            emergency: None,
        }
    }

    /// A session whose start-up settings set the search_path to `value`.
    pub fn with_search_path(mut self, value: &str) -> Self {
        let path = match crate::sql::parse_search_path(value) {
            Some(p) => crate::sql::SearchPath::Known(p.into()),
            None => crate::sql::SearchPath::Unknown,
        };
        self.search_path = path.clone();
        self.startup_path = path;
        self
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

    /// Writes an audit record for every statement (before it is forwarded) and its
    /// outcome; statements that cannot be recorded are refused with 58030.
    pub fn with_audit(mut self, audit: SessionAudit) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Notes a parameter the server reported (at login or later); returns the value the
    /// client is shown.
    pub fn observe_parameter<'a>(&'a mut self, name: &str, value: &'a str) -> &'a str {
        if name == "client_encoding" {
            self.encoding = ClientEncoding::from_name(value);
        }
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
        if name == "application_name" {
            self.shown_app_name = self.client_parameter(name, value).to_owned();
            return &self.shown_app_name;
        }
        self.client_parameter(name, value)
    }

    /// What value conversions need to know of the session.
    fn ctx(&self) -> Context {
        Context {
            utc: self.utc,
            encoding: self.encoding,
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

    /// Rewrites a ParameterStatus value for the client (see [`Session::new`]): the upstream
    /// `phigate:<user>/<name>` (also after the client's own SET) is shown as `<name>`.
    pub fn client_parameter<'a>(&'a self, name: &str, value: &'a str) -> &'a str {
        if name != "application_name" {
            return value;
        }
        if value == self.upstream_app_name {
            return &self.client_app_name;
        }
        let prefix = self
            .upstream_app_name
            .strip_suffix(&self.client_app_name)
            .and_then(|p| p.strip_suffix('/'))
            .unwrap_or(&self.upstream_app_name);
        match value.strip_prefix(prefix) {
            Some("") => "",
            Some(rest) => rest.strip_prefix('/').unwrap_or(value),
            None => value,
        }
    }

    /// Handles one message from the client.
    pub fn on_frontend(&mut self, frame: Frame, now: Instant, out: &mut Outbound) {
        if self.phase != Phase::Open {
            return;
        }
        if self.encoding.is_utf8() {
            return self.frontend(frame, now, out);
        }
        // Text in another client encoding: analysed as UTF-8, forwarded in its encoding.
        let converted = match self.encoding.frontend_to_utf8(frame.tag(), frame.body()) {
            Ok(None) => return self.frontend(frame, now, out),
            Ok(Some(body)) => Frame::new(frame.tag(), &body),
            Err(_) => return self.encoding_refusal(frame.tag(), now, out),
        };
        let mark = out.upstream.len();
        self.frontend(converted, now, out);
        match self.encoding.upstream_from_utf8(&out.upstream[mark..]) {
            Ok(bytes) => {
                out.upstream.truncate(mark);
                out.upstream.extend_from_slice(&bytes);
            }
            Err(_) => {
                out.upstream.truncate(mark);
                let e = PgError::fatal(
                    "22P05",
                    "phigate's rewrite of the statement holds a character the client encoding cannot represent",
                )
                .with_hint("use a client encoding that can represent the user's attributes (UTF8)");
                self.fail_upstream(e, out);
            }
        }
    }

    /// A client message whose text is not valid in the client encoding (or in one phigate
    /// cannot convert): refused in protocol order, as PostgreSQL refuses it.
    fn encoding_refusal(&mut self, tag: u8, now: Instant, out: &mut Outbound) {
        let refusal = Refusal {
            code: "22021",
            message: format!(
                "invalid byte sequence for the client encoding, or a client encoding phigate cannot convert ({:?})",
                self.encoding
            ),
            hint: "send text valid in the client encoding; phigate converts UTF8, LATIN1-10, ISO_8859_5-8, WIN866, WIN874, WIN1250-1258, KOI8R/U, EUC_JP, EUC_KR, UHC, EUC_CN, GBK, GB18030, BIG5 and SJIS".into(),
        };
        match tag {
            b'Q' => self.refuse_query(refusal, now, out),
            _ => self.refuse_extended(Arc::new(refusal), out),
        }
    }

    fn frontend(&mut self, frame: Frame, now: Instant, out: &mut Outbound) {
        let msg = match Frontend::decode(&frame) {
            Ok(m) => m,
            Err(e) => return self.protocol_violation(&e, out),
        };
        if self
            .emergency
            .as_ref()
            .is_some_and(|(until, _)| now >= *until)
        {
            self.emergency = None;
            if let Some(a) = &mut self.audit {
                a.template.break_glass = None;
            }
        }
        // Statements are analysed once, for the audit record and for the rewrite.
        self.follow_search_path(&msg);
        let ctx = self.ctx();
        let path = self.search_path.clone();
        let analysis = match (&mut self.guard, &msg) {
            // The server knows phigate:<user>/<name>; the client sees its own name.
            (Some(_), Frontend::Query { sql } | Frontend::Parse { sql, .. })
                if is_show_application_name(sql) =>
            {
                Some(Analysis::Rewrite(Arc::new(Plan::text(format!(
                    "SELECT {}::text AS application_name",
                    crate::policy::quote_text(&self.shown_app_name)
                )))))
            }
            (Some(g), Frontend::Query { sql } | Frontend::Parse { sql, .. }) => {
                g.subject.emergency = self.emergency.is_some();
                let analyzer = g.enforcement.current();
                Some(analyzer.analyse_on(&g.subject, ctx, &path, sql))
            }
            // A fast-path call names its function by OID, out of the firewall's sight: only
            // the large-object functions libpq calls this way may run.
            (Some(_), Frontend::FunctionCall) if !large_object_call(frame.body()) => {
                Some(Analysis::Refuse(Arc::new(fast_path_refusal())))
            }
            _ => None,
        };
        if self.audit.is_some() && !self.audit_frontend(&msg, analysis.as_ref(), now, out) {
            return;
        }
        if self.guard.is_some() && self.guarded(&frame, &msg, analysis, now, out) {
            return;
        }
        match msg {
            Frontend::Query { .. } | Frontend::FunctionCall => {
                let audit = std::mem::take(&mut self.audit_query);
                self.owe(Pending::Query {
                    since: now,
                    plan: None,
                    refused: None,
                    audit,
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
            Frontend::Execute { .. } => {
                let audit = self.audit_execute.take();
                self.push_unflushed(Pending::Execute {
                    since: now,
                    rows: None,
                    audit,
                });
            }
            // PostgreSQL ignores Sync and Flush while a COPY FROM STDIN is streaming.
            Frontend::Sync if !self.copy_in => {
                self.skipping = false;
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

    /// The audit record of a message, written before it is forwarded. Returns false when
    /// the record cannot be written: the message has then been replaced by a 58030 refusal.
    fn audit_frontend(
        &mut self,
        msg: &Frontend<'_>,
        analysis: Option<&Analysis>,
        now: Instant,
        out: &mut Outbound,
    ) -> bool {
        let Some(audit) = self.audit.take() else {
            return true;
        };
        let written = self.audit_message(&audit, msg, analysis, now, out);
        self.audit = Some(audit);
        written
    }

    fn audit_message(
        &mut self,
        audit: &SessionAudit,
        msg: &Frontend<'_>,
        analysis: Option<&Analysis>,
        now: Instant,
        out: &mut Outbound,
    ) -> bool {
        match msg {
            Frontend::Query { sql } => {
                let statements = redact(sql);
                let mut seqs = VecDeque::with_capacity(statements.len());
                for stmt in &statements {
                    let record = self.statement_record(audit, stmt, &[], analysis);
                    match audit.auditor.record(record, true) {
                        Ok(seq) => seqs.push_back(seq),
                        Err(e) => {
                            tracing::error!(error = %e, "audit log unwritable: statement refused");
                            self.refuse_query(audit_refusal(), now, out);
                            return false;
                        }
                    }
                }
                if !matches!(analysis, Some(Analysis::Refuse(_))) {
                    self.audit_query = seqs;
                }
            }
            Frontend::FunctionCall => {
                let call = Redacted {
                    text: "<fast-path function call>".into(),
                    values: Vec::new(),
                };
                match audit
                    .auditor
                    .record(self.statement_record(audit, &call, &[], analysis), true)
                {
                    Ok(seq) if analysis.is_none() => self.audit_query = VecDeque::from([seq]),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "audit log unwritable: statement refused");
                        self.refuse_query(audit_refusal(), now, out);
                        return false;
                    }
                }
            }
            Frontend::Parse { name, sql, .. } => {
                let text = redact(sql).into_iter().next().map(Arc::new);
                if let Some(Analysis::Refuse(_)) = analysis
                    && let Some(t) = &text
                {
                    let record = self.statement_record(audit, t, &[], analysis);
                    if let Err(e) = audit.auditor.record(record, false) {
                        tracing::error!(error = %e, "audit log unwritable");
                    }
                }
                match text {
                    Some(t) => self.audit_statements.insert((*name).to_owned(), t),
                    None => self.audit_statements.remove(*name),
                };
            }
            Frontend::Bind(b) => {
                let text = self.audit_statements.get(b.statement).cloned();
                let hashes = b
                    .params
                    .iter()
                    .flatten()
                    .map(|v| audit.auditor.value_hash(v))
                    .collect();
                self.audit_portals
                    .insert(b.portal.to_owned(), (text, hashes));
            }
            Frontend::Execute { portal, .. } => {
                let (text, hashes) = self
                    .audit_portals
                    .get(*portal)
                    .cloned()
                    .unwrap_or((None, Vec::new()));
                let unknown = Redacted {
                    text: "<unknown portal>".into(),
                    values: Vec::new(),
                };
                let text = text.as_deref().unwrap_or(&unknown);
                let plan = self
                    .portals
                    .get(*portal)
                    .map(|r| Analysis::Rewrite(r.plan.clone()));
                let record = self.statement_record(audit, text, &hashes, plan.as_ref());
                match audit.auditor.record(record, true) {
                    Ok(seq) => self.audit_execute = Some(seq),
                    Err(e) => {
                        tracing::error!(error = %e, "audit log unwritable: statement refused");
                        self.refuse_extended(Arc::new(audit_refusal()), out);
                        return false;
                    }
                }
            }
            Frontend::Close { target, name } => {
                match target {
                    Target::Statement => self.audit_statements.remove(*name).map(|_| ()),
                    Target::Portal => self.audit_portals.remove(*name).map(|_| ()),
                };
            }
            _ => {}
        }
        true
    }

    /// Replaces a simple Query (or function call) by a statement that makes PostgreSQL
    /// raise `refusal` in its place, in protocol order.
    fn refuse_query(&mut self, refusal: Refusal, now: Instant, out: &mut Outbound) {
        out.events.push(Event::Refused(refusal.code));
        build::query(transform::REFUSAL_SQL, &mut out.upstream);
        self.owe(Pending::Query {
            since: now,
            plan: None,
            refused: Some(Arc::new(refusal)),
            audit: VecDeque::new(),
        });
        self.unflushed = 0;
    }

    /// The begin record of one statement.
    fn statement_record(
        &self,
        audit: &SessionAudit,
        stmt: &Redacted,
        params: &[String],
        analysis: Option<&Analysis>,
    ) -> Record {
        let mut r = audit.template.clone();
        r.kind = Some(Kind::Statement);
        r.statement = Some(stmt.text.clone());
        r.values = stmt
            .values
            .iter()
            .map(|v| audit.auditor.value_hash(v))
            .chain(params.iter().cloned())
            .collect();
        r.decision = Some(Decision::Allowed);
        match analysis {
            Some(Analysis::Rewrite(plan)) => {
                r.tables = plan.tables.iter().map(|t| t.name.to_string()).collect();
                r.phi_columns.clone_from(&plan.columns);
                r.policies_applied.clone_from(&plan.policies);
            }
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

    /// The outcome record of a statement whose begin record is `begin`.
    fn audit_end(&self, begin: u64, rows: Option<u64>, sqlstate: Option<&str>, elapsed: Duration) {
        let Some(audit) = &self.audit else {
            return;
        };
        let mut r = audit.template.clone();
        r.kind = Some(Kind::StatementEnd);
        r.begin = Some(begin);
        r.rows = rows;
        r.sqlstate = sqlstate.map(str::to_owned);
        r.decision = Some(if sqlstate.is_some() {
            Decision::Error
        } else {
            Decision::Allowed
        });
        r.duration_us = Some(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
        if let Err(e) = audit.auditor.record(r, false) {
            tracing::error!(error = %e, "audit log unwritable: a statement's outcome is not recorded");
        }
    }

    /// The frontend messages encryption changes. Returns true when the message was handled
    /// (forwarded in rewritten form, or replaced by a refusal).
    fn guarded(
        &mut self,
        frame: &Frame,
        msg: &Frontend<'_>,
        analysis: Option<Analysis>,
        now: Instant,
        out: &mut Outbound,
    ) -> bool {
        let ctx = self.ctx();
        match msg {
            Frontend::FunctionCall => match analysis {
                Some(Analysis::Refuse(r)) => {
                    self.refuse_query((*r).clone(), now, out);
                    true
                }
                _ => false,
            },
            Frontend::Query { .. } => {
                let (plan, refused) = match analysis {
                    None | Some(Analysis::Pass) => {
                        self.client_copy = ClientCopy::Raw;
                        return false;
                    }
                    Some(Analysis::Declare { reason }) => {
                        let Some(g) = self.guard.as_ref() else {
                            return false;
                        };
                        let lasts = g.break_glass_for;
                        // The native row policies read the expiry: they lift on their own.
                        let until =
                            humantime::format_rfc3339_seconds(std::time::SystemTime::now() + lasts)
                                .to_string();
                        let tagged = g.session_key.emergency(&until, g.backend_pid);
                        build::query(
                            &format!("SET phigate.emergency = '{tagged}'"),
                            &mut out.upstream,
                        );
                        if let Some(a) = &mut self.audit {
                            a.template.break_glass = Some(reason.clone());
                        }
                        out.events.push(Event::BreakGlass);
                        self.emergency = Some((now + lasts, reason));
                        (None, None)
                    }
                    Some(Analysis::Rewrite(plan)) => {
                        build::query(&plan.sql, &mut out.upstream);
                        self.client_copy = client_copy(&plan, ctx);
                        (Some(plan), None)
                    }
                    Some(Analysis::Refuse(r)) => {
                        build::query(transform::REFUSAL_SQL, &mut out.upstream);
                        self.client_copy = ClientCopy::Discard;
                        (None, Some(r))
                    }
                };
                let audit = std::mem::take(&mut self.audit_query);
                self.owe(Pending::Query {
                    since: now,
                    plan,
                    refused,
                    audit,
                });
                self.unflushed = 0;
                true
            }
            Frontend::Parse {
                name, param_types, ..
            } => {
                self.client_copy = ClientCopy::Raw;
                let Some(analysis) = analysis else {
                    return false;
                };
                // A named statement that exists is not replaced (PostgreSQL refuses the
                // Parse); the unnamed one always is.
                let keep = !name.is_empty() && self.statements.contains_key(*name);
                if !keep {
                    self.statements.remove(*name);
                }
                match analysis {
                    Analysis::Pass => return false,
                    Analysis::Declare { .. } => self.refuse_extended(
                        Arc::new(Refusal {
                            code: "0A000",
                            message: "an emergency is declared with a simple query".into(),
                            hint: "send SET phigate.break_glass = '<reason>' as a simple query (psql does)".into(),
                        }),
                        out,
                    ),
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
                            plan: Some((p.plan.clone(), Arc::from(p.declared.as_slice()))),
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
                if rows.plan.copy.as_ref().is_some_and(|c| c.from_client) {
                    self.client_copy = client_copy(&rows.plan, ctx);
                }
                let audit = self.audit_execute.take();
                self.push_unflushed(Pending::Execute {
                    since: now,
                    rows: Some(rows),
                    audit,
                });
                out.upstream.extend_from_slice(frame.raw());
                true
            }
            Frontend::CopyData => match &mut self.client_copy {
                ClientCopy::Raw => false,
                ClientCopy::Discard => true,
                ClientCopy::Encrypt(copy_in) => {
                    if let Err(r) = copy_in.data(frame.body(), &mut out.upstream) {
                        self.abort_copy(r, out);
                    }
                    true
                }
            },
            Frontend::CopyDone => {
                if let ClientCopy::Encrypt(mut copy_in) =
                    std::mem::replace(&mut self.client_copy, ClientCopy::Raw)
                    && let Err(r) = copy_in.done(&mut out.upstream)
                {
                    self.abort_copy(r, out);
                    self.client_copy = ClientCopy::Raw;
                }
                false
            }
            Frontend::CopyFail => {
                self.client_copy = ClientCopy::Raw;
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
        self.client_copy = ClientCopy::Discard;
        self.copy_refusal = Some(Arc::new(refusal));
        build::message(&mut out.upstream, b'f', |b| {
            build::put_cstr(b, transform::REFUSAL_MESSAGE);
        });
    }

    /// Replaces an extended-protocol message by a statement that makes PostgreSQL raise
    /// an error in its place (see [`transform::refusal_extended`]).
    fn refuse_extended(&mut self, refusal: Arc<Refusal>, out: &mut Outbound) {
        out.events.push(Event::Refused(refusal.code));
        transform::refusal_extended(&mut out.upstream);
        self.client_copy = ClientCopy::Discard;
        self.push_unflushed(Pending::Refused { refusal, hidden: 0 });
    }

    /// Notes a response the server owes (none while it skips until Sync).
    fn owe(&mut self, p: Pending) {
        if !self.skipping {
            self.pending.push_back(p);
        }
    }

    fn push_unflushed(&mut self, p: Pending) {
        if self.skipping {
            return;
        }
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
                    plan: Some((plan, declared)),
                    ..
                }) => {
                    transform::parameter_description(body, plan, declared, &mut out.client)?;
                    return Ok(());
                }
                _ => {}
            },
            b'T' => return self.row_description(frame, out),
            b'D' => return self.data_row(frame, out),
            b'C' | b'I' | b's' => {
                self.simple_rows = None;
                self.copy_out = None;
                let (kind, rows) = match frame.tag() {
                    b'C' => {
                        let tag = message::decode_command_tag(body)?;
                        let rows = tag.rsplit(' ').next().and_then(|n| n.parse().ok());
                        (StatementKind::from_tag(tag), rows)
                    }
                    _ => (StatementKind::Other, None),
                };
                self.copy_in = false;
                self.statement_done(kind, rows, None, now, out);
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
                let code = fields.code.to_owned();
                self.statement_done(StatementKind::Failed, None, Some(&code), now, out);
                if self.front_is_extended() {
                    // The server skips every message up to the next Sync; those the client
                    // has not sent yet will be skipped too.
                    self.skipping = true;
                    while let Some(p) = self.pending.front() {
                        if matches!(p, Pending::Sync) {
                            self.skipping = false;
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
                if let Some(Pending::Query { audit, .. }) = self.pending.front_mut() {
                    // Statements after a failed one in a simple query do not run.
                    let skipped = std::mem::take(audit);
                    for begin in skipped {
                        self.audit_end(begin, None, Some("not run"), Duration::ZERO);
                    }
                }
                self.complete_head();
            }
            b'G' | b'W' => self.copy_started(),
            b'H' => {
                let ctx = self.ctx();
                self.copy_out = self.copy_plan().map(|p| copy::CopyOut::new(p, ctx));
            }
            b'd' => {
                if let Some(copy_out) = &mut self.copy_out {
                    match copy_out.data(body, &mut out.client) {
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
            // a value in a client encoding other than UTF-8 is passed on as it is
            b'S' => {
                if let Ok((name, value)) = message::decode_parameter_status(body) {
                    let shown = self.observe_parameter(name, value);
                    if shown != value {
                        build::parameter_status(name, shown, &mut out.client);
                        return Ok(());
                    }
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
    fn statement_done(
        &mut self,
        kind: StatementKind,
        rows: Option<u64>,
        sqlstate: Option<&str>,
        now: Instant,
        out: &mut Outbound,
    ) {
        match self.pending.front_mut() {
            Some(Pending::Execute { since, audit, .. }) => {
                let elapsed = now.saturating_duration_since(*since);
                let begin = audit.take();
                out.events.push(Event::Statement { kind, elapsed });
                if let Some(begin) = begin {
                    self.audit_end(begin, rows, sqlstate, elapsed);
                }
                if kind != StatementKind::Failed {
                    self.complete_head();
                }
            }
            Some(Pending::Query { since, audit, .. }) => {
                let elapsed = now.saturating_duration_since(*since);
                *since = now;
                let begin = audit.pop_front();
                out.events.push(Event::Statement { kind, elapsed });
                if let Some(begin) = begin {
                    self.audit_end(begin, rows, sqlstate, elapsed);
                }
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
        // The statement it describes, and whether the client sees the description.
        let (plan, shown) = match self.pending.front() {
            Some(Pending::HiddenDescribe(plan, _)) => (plan.clone(), false),
            Some(Pending::Describe {
                rows: Some((plan, _)),
                ..
            })
            | Some(Pending::Query {
                plan: Some(plan), ..
            }) => (plan.clone(), true),
            _ => {
                self.pass_row_description(frame, out);
                return Ok(());
            }
        };
        let mut hidden = BytesMut::new();
        let (shape, formats) = transform::row_description(
            body,
            guard.enforcement.current().catalog(),
            &guard.subject,
            plan.outputs.as_deref(),
            if shown { &mut out.client } else { &mut hidden },
        )?;
        match self.pending.front() {
            Some(
                Pending::HiddenDescribe(_, cell)
                | Pending::Describe {
                    rows: Some((_, cell)),
                    ..
                },
            ) => {
                let _ = cell.set(shape);
                self.complete_head();
            }
            // a simple Query: its rows follow
            _ => self.simple_rows = Some((shape, formats)),
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
        match transform::data_row(frame.body(), shape, formats, self.ctx(), &mut out.client) {
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
}

/// `SHOW application_name`, alone.
fn is_show_application_name(sql: &str) -> bool {
    let words: Vec<&str> = sql
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .collect();
    matches!(words.as_slice(), [a, b] if a.eq_ignore_ascii_case("show") && b.eq_ignore_ascii_case("application_name"))
}

/// How the COPY data after `plan` is handled.
fn client_copy(plan: &Arc<Plan>, ctx: Context) -> ClientCopy {
    match &plan.copy {
        Some(c) if c.from_client => ClientCopy::Encrypt(copy::CopyIn::new(plan.clone(), ctx)),
        _ => ClientCopy::Raw,
    }
}

impl Session {
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
        if err.code == "57P05"
            && let Some(audit) = &self.audit
        {
            let mut r = audit.template.clone();
            r.kind = Some(Kind::IdleTimeout);
            if let Err(e) = audit.auditor.record(r, false) {
                tracing::error!(error = %e, "audit log unwritable: idle timeout not recorded");
            }
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
