//! The responses the client is still owed, in the order it asked for them, and PostgreSQL's
//! rules for them: an error in the extended protocol skips to the next Sync; Sync and Flush
//! are ignored while a COPY FROM STDIN streams. The queue also tells when a session is idle.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;

use super::registry::{Rows, Statement};
use crate::encryption::Shape;
use crate::sql::{Plan, Refusal};

/// A response the client is still owed.
#[derive(Debug)]
pub(super) enum Pending {
    /// `replaces`: the Parse of a name phigate holds, which PostgreSQL accepts only when
    /// the name was deallocated by SQL (DEALLOCATE, DISCARD ALL); the new statement takes
    /// its place at ParseComplete
    Parse {
        replaces: Option<Box<(String, Statement)>>,
    },
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
    /// A message phigate sent on its own (a delegated end user's identity): its answer
    /// is not shown to the client.
    Hidden(Hidden),
}

/// What answers a message phigate sent on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hidden {
    /// a simple Query: answered up to ReadyForQuery
    Query,
    /// Parse, Bind or Close: one completion message
    Completion,
    /// Execute: rows, then CommandComplete
    Execute,
}

impl Pending {
    /// A message of the extended protocol: after an error, the server skips to Sync.
    fn is_extended(&self) -> bool {
        matches!(
            self,
            Pending::Parse { .. }
                | Pending::Bind
                | Pending::Describe { .. }
                | Pending::Close
                | Pending::Execute { .. }
                | Pending::HiddenDescribe(..)
                | Pending::Refused { .. }
                | Pending::Hidden(Hidden::Completion | Hidden::Execute)
        )
    }
}

/// The queue of responses owed.
#[derive(Debug, Default)]
pub(super) struct Queue {
    pending: VecDeque<Pending>,
    /// entries at the back of `pending` sent since the last Sync/Flush/Query: the server
    /// owes nothing for them until the client flushes
    unflushed: usize,
    /// a COPY FROM STDIN is streaming: the server waits for the client
    pub(super) copy_in: bool,
    /// the server is skipping the client's messages until its next Sync (an error in the
    /// extended protocol arrived before that Sync did): they are owed no response
    skipping: bool,
}

impl Queue {
    /// True while the server owes a response without further client input.
    pub(super) fn awaiting_upstream(&self) -> bool {
        !self.copy_in && self.pending.len() > self.unflushed
    }

    /// True when no response is owed and nothing waits for a flush.
    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.unflushed == 0 && !self.copy_in
    }

    /// The oldest response owed.
    pub(super) fn front(&self) -> Option<&Pending> {
        self.pending.front()
    }

    pub(super) fn front_mut(&mut self) -> Option<&mut Pending> {
        self.pending.front_mut()
    }

    /// Notes a response to a message the server answers at once (a simple Query), which
    /// also flushes what came before it.
    pub(super) fn owe_now(&mut self, p: Pending) {
        if !self.skipping {
            self.pending.push_back(p);
        }
        self.unflushed = 0;
    }

    /// Notes a response the server owes once the client flushes (none while it skips until
    /// Sync).
    pub(super) fn owe(&mut self, p: Pending) {
        if self.skipping {
            return;
        }
        self.pending.push_back(p);
        self.unflushed += 1;
    }

    /// A Sync (outside COPY): the server answers everything before it.
    pub(super) fn sync(&mut self) {
        self.skipping = false;
        self.pending.push_back(Pending::Sync);
        self.unflushed = 0;
    }

    /// A Flush (outside COPY), or anything else that makes the server answer.
    pub(super) fn flush(&mut self) {
        self.unflushed = 0;
    }

    /// True when messages sent since the last flush are still unanswered.
    pub(super) fn has_unflushed(&self) -> bool {
        self.unflushed > 0
    }

    /// CopyDone or CopyFail from the client.
    pub(super) fn copy_end(&mut self) {
        if self.copy_in {
            self.copy_in = false;
        } else {
            self.pending.push_back(Pending::CopyEnd);
        }
        self.unflushed = 0;
    }

    /// The statement a Parse still unanswered makes of `name`, and whether a Sync follows
    /// that Parse (then a Bind may run against the old statement if the Parse fails).
    pub(super) fn replacing(&self, name: &str) -> Option<(&Statement, bool)> {
        let mut synced = false;
        for p in self.pending.iter().rev() {
            match p {
                Pending::Sync => synced = true,
                Pending::Parse { replaces: Some(r) } if r.0 == name => return Some((&r.1, synced)),
                _ => {}
            }
        }
        None
    }

    /// Takes the replacement the Parse at the head carries.
    pub(super) fn take_replacement(&mut self) -> Option<Box<(String, Statement)>> {
        match self.pending.front_mut() {
            Some(Pending::Parse { replaces }) => replaces.take(),
            _ => None,
        }
    }

    /// Notes an error phigate produced, delivered in order.
    pub(super) fn push_synthetic(&mut self, msg: Bytes, fatal: bool) {
        self.pending.push_back(Pending::Synthetic { msg, fatal });
    }

    /// The head was answered.
    pub(super) fn complete_head(&mut self) {
        self.pending.pop_front();
        self.unflushed = self.unflushed.min(self.pending.len());
    }

    /// An error arrived for the head: in the extended protocol, the server skips every
    /// message up to the next Sync, including those the client has not sent yet.
    pub(super) fn skip_after_error(&mut self) {
        if !self.pending.front().is_some_and(Pending::is_extended) {
            return;
        }
        self.skipping = true;
        while let Some(p) = self.pending.front() {
            if matches!(p, Pending::Sync) {
                self.skipping = false;
                break;
            }
            self.pending.pop_front();
        }
    }

    /// CopyInResponse: the server now reads COPY data, ignoring any Sync the client
    /// pipelined before the end of its data.
    pub(super) fn copy_started(&mut self) {
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

    /// Takes the synthetic messages that have reached the head, in order; true when one of
    /// them was fatal (the queue is then cleared).
    pub(super) fn settle(&mut self, client: &mut bytes::BytesMut) -> bool {
        loop {
            match self.pending.front() {
                Some(Pending::CopyEnd) => {}
                Some(Pending::Synthetic { msg, fatal }) => {
                    client.extend_from_slice(msg);
                    if *fatal {
                        self.pending.clear();
                        return true;
                    }
                }
                _ => return false,
            }
            self.pending.pop_front();
        }
    }

    /// Forgets every response owed (the connection is ending).
    pub(super) fn clear(&mut self) {
        self.pending.clear();
    }
}
