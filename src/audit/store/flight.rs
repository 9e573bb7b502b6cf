//! The syncer's write outside the log's lock: the buffered lines are taken under it
//! ([`AuditLog::take_for_write`]), written without it ([`Flight::write`]) and recorded
//! under it again ([`AuditLog::land`]). Meanwhile appends go on, staging their gated
//! lines in the staging file's other region; one that needs the segment waits for the
//! landing (see `Auditor`).

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use super::AuditLog;
use crate::audit::chain::Chain;
use crate::audit::{AuditError, io};

/// Lines taken from the log's buffer for the syncer to write outside the log's lock (see
/// [`AuditLog::take_for_write`]).
#[derive(Debug)]
pub(crate) struct Flight {
    bytes: Vec<u8>,
    /// the chain as of the last of them
    chain: Chain,
    file: Arc<File>,
    path: PathBuf,
}

impl Flight {
    /// Appends the lines to the segment; report the result to [`AuditLog::land`].
    pub(crate) fn write(&self) -> std::io::Result<()> {
        (&*self.file).write_all(&self.bytes)
    }
}

impl AuditLog {
    /// True when the syncer's write is in flight.
    pub(crate) fn writing(&self) -> bool {
        self.writing
    }

    /// How many failed writes have dropped the buffered lines that were not staged.
    pub(crate) fn rewinds(&self) -> u64 {
        self.rewinds
    }

    /// [`AuditLog::settle`] of a record appended while a write was in flight, once it has
    /// landed; `rewinds` is what [`AuditLog::rewinds`] said when it was appended. A failed
    /// write meanwhile dropped the lines not staged, this one with them: an error.
    pub(crate) fn settle_late(&mut self, flush: bool, rewinds: u64) -> Result<(), AuditError> {
        if self.rewinds != rewinds {
            return Err(AuditError::Io {
                path: self.path.clone(),
                cause: std::io::Error::other("the write of the audit log failed"),
            });
        }
        self.settle(flush).map(|_| ())
    }

    /// Takes the buffered lines, all staged, for the syncer to write outside the log's
    /// lock ([`Flight::write`]), so that appends meanwhile never wait for the disk; their
    /// staging region is kept until they land ([`AuditLog::land`]). Where they cannot be
    /// staged (no staging file, writes failing, no room), they are written here, under
    /// the lock, and `None` is returned, as when there is nothing to write.
    pub(crate) fn take_for_write(&mut self) -> Result<Option<Flight>, AuditError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        if !self.stage() {
            self.write_out()?;
            return Ok(None);
        }
        if let Some(staging) = &mut self.staging {
            staging.hand_over();
        }
        self.writing = true;
        let bytes = std::mem::replace(&mut self.buf, std::mem::take(&mut self.spare));
        Ok(Some(Flight {
            bytes,
            chain: self.chain.clone(),
            file: self.file.clone(),
            path: self.path.clone(),
        }))
    }

    /// Records how the write of `flight` went. Written: the lines count as written, and
    /// their staging region is emptied. Failed: as [`AuditLog::write_out`] fails, the
    /// segment is cut back to its last complete line, the lines are back at the front of
    /// the buffer, and of those appended meanwhile the ones not staged are dropped.
    pub(crate) fn land(
        &mut self,
        flight: Flight,
        result: std::io::Result<()>,
    ) -> Result<(), AuditError> {
        self.writing = false;
        let Flight {
            mut bytes,
            chain,
            path,
            ..
        } = flight;
        if let Err(e) = result {
            // the lines go back in front of those appended meanwhile, still staged
            if let Some(staging) = &mut self.staging {
                staging.take_back(bytes.len());
            }
            bytes.extend_from_slice(&self.buf);
            self.buf = bytes;
            self.rewind();
            return Err(io(&path)(e));
        }
        self.bytes += bytes.len() as u64;
        self.written = chain;
        self.dirty = true;
        if let Some(staging) = &mut self.staging {
            staging.written();
        }
        bytes.clear();
        self.spare = bytes;
        Ok(())
    }
}
