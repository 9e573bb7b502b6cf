//! The session's COPY state: what becomes of the COPY data a client sends, and the COPY
//! TO STDOUT being decrypted (the rewriting itself is `encryption::copy`).

use std::sync::Arc;

use crate::encryption::{Ciphers, CopyIn, CopyOut};
use crate::protocol::value::Context;
use crate::sql::{Plan, Refusal};

/// What phigate does with the COPY data a client sends, decided when the client sends the
/// statement it belongs to, never by the server's answer: a client may send its data before
/// CopyInResponse, and that data must meet the same encryption.
#[derive(Debug, Default)]
pub(super) enum ClientCopy {
    /// not a COPY into a protected table: forwarded as it is
    #[default]
    Raw,
    /// a COPY FROM STDIN into a protected table: rows are encrypted
    Encrypt(CopyIn),
    /// the statement was refused, or phigate aborted the COPY: the data is dropped
    Discard,
}

impl ClientCopy {
    /// How the COPY data after `plan` is handled.
    pub(super) fn after(plan: &Plan, ciphers: &Ciphers, ctx: Context) -> Self {
        match &plan.copy {
            Some(c) if c.from_client => ClientCopy::Encrypt(CopyIn::new(plan, ciphers, ctx)),
            _ => ClientCopy::Raw,
        }
    }
}

/// The COPY state of a session.
#[derive(Debug, Default)]
pub(super) struct CopyState {
    /// what becomes of the COPY data the client sends next: it follows the client's own
    /// order (a client may send its data before the server's CopyInResponse)
    pub(super) client: ClientCopy,
    /// phigate aborted a COPY FROM STDIN (a value was invalid): the server's error is
    /// replaced by this one
    pub(super) refusal: Option<Arc<Refusal>>,
    /// a COPY TO STDOUT of a protected table is streaming (and whether its header is next)
    pub(super) out: Option<CopyOut>,
}
