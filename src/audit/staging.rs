//! The staging file: where a gated record reaches the operating system before its
//! statement is forwarded, without a system call.
//!
//! A session's gated record must be in the OS (a crash of phigate loses nothing) before
//! its statement goes upstream. Writing it to the segment costs a `write` per statement;
//! mapping the segment itself costs a page fault per new page (measured slower, see
//! docs/NOTES.md). The staging file is small, allocated once and mapped: the log copies
//! its unwritten lines into it (pages already mapped and writable, so no fault and no
//! system call), and the syncer writes them to the segment with one `write` per tick. The
//! file holds a header (magic, length of the staged lines) and those lines; once they are
//! in the segment its length goes back to zero. At open, lines a crash left staged are
//! taken into the log first (see `AuditLog::open`). The file also carries the log's
//! lock: one process per log ([`lock`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapMut;

use super::{AuditError, io};

/// The staging file's name in the log's directory (never a segment: not `.jsonl`).
pub(super) const FILE: &str = "staged";
const MAGIC: &[u8; 8] = b"phgstg01";
/// The magic and the length of the staged lines (little-endian u64).
const HEADER: usize = 16;
/// Room for staged lines; more than the log buffers before it writes on its own.
const CAPACITY: usize = 256 << 10;

/// The mapped staging file of an open log.
#[derive(Debug)]
pub(super) struct Staging {
    map: MmapMut,
    /// bytes of the log's buffer mirrored in the file
    used: usize,
}

/// Takes the log in `dir` for this process: an exclusive lock on its staging file
/// (created empty when missing), held as long as the returned file is open. A second
/// process on the same log would fork its chain, and truncate the first one's mapping.
pub(super) fn lock(dir: &Path) -> Result<File, AuditError> {
    let path = dir.join(FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io(&path))?;
    // SAFETY: flock on a descriptor this function owns, no memory involved
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let cause = std::io::Error::last_os_error();
        let cause = if cause.kind() == std::io::ErrorKind::WouldBlock {
            std::io::Error::other(
                "another phigate process is writing this audit log; give each instance \
                 its own audit.dir",
            )
        } else {
            cause
        };
        return Err(io(&path)(cause));
    }
    Ok(file)
}

/// The lines a previous run left staged in the locked staging `file` (see [`lock`]; in
/// `dir`), empty when none: they may or may not have reached the segment before that run
/// ended.
pub(super) fn leftover(file: &File, dir: &Path) -> Result<Vec<u8>, AuditError> {
    let path = dir.join(FILE);
    let mut bytes = Vec::new();
    let mut reader = file;
    reader
        .rewind()
        .and_then(|()| reader.read_to_end(&mut bytes))
        .map_err(io(&path))?;
    if bytes.is_empty() {
        return Ok(bytes);
    }
    let Some(header) = bytes.get(..HEADER).filter(|h| h.starts_with(MAGIC)) else {
        return Err(AuditError::Corrupt {
            path,
            problem: "not a staging file; move it away if it is not phigate's".into(),
        });
    };
    let mut len = [0u8; 8];
    len.copy_from_slice(&header[8..]);
    let len = usize::try_from(u64::from_le_bytes(len)).unwrap_or(usize::MAX);
    let end = HEADER.saturating_add(len).min(bytes.len());
    bytes.truncate(end);
    Ok(bytes.split_off(HEADER.min(end)))
}

impl Staging {
    /// The locked staging `file` (see [`lock`]; in `dir`) emptied, its blocks written
    /// once (so a write into the mapping never needs disk space), and mapped.
    pub(super) fn create(file: &File, dir: &Path) -> Result<Self, AuditError> {
        let path = dir.join(FILE);
        let mut blank = vec![0u8; HEADER + CAPACITY];
        blank[..MAGIC.len()].copy_from_slice(MAGIC);
        file.set_len(0)
            .and_then(|()| file.write_all_at(&blank, 0))
            .and_then(|()| file.sync_all())
            .map_err(io(&path))?;
        // SAFETY: the file is the log's own (mode 0600 in its 0700 directory) and keeps
        // its length while mapped; only this mapping writes to it while the log is open.
        let map = unsafe { MmapMut::map_mut(file) }.map_err(io(&path))?;
        Ok(Self { map, used: 0 })
    }

    /// Bytes of the log's buffer already staged.
    pub(super) fn used(&self) -> usize {
        self.used
    }

    /// Mirrors `buf`, whose first [`Staging::used`] bytes are already staged. False, with
    /// nothing changed, when it does not fit.
    pub(super) fn stage(&mut self, buf: &[u8]) -> bool {
        let (Some(new), Some(room)) = (
            buf.get(self.used..),
            self.map.get_mut(HEADER + self.used..HEADER + buf.len()),
        ) else {
            return false;
        };
        room.copy_from_slice(new);
        self.set_len(buf.len());
        self.used = buf.len();
        true
    }

    /// Everything staged is in the segment now.
    pub(super) fn clear(&mut self) {
        if self.used > 0 {
            self.set_len(0);
            self.used = 0;
        }
    }

    /// Publishes the staged length: the lines reach the mapping before their length does.
    fn set_len(&mut self, len: usize) {
        let at = self
            .map
            .as_mut_ptr()
            .wrapping_add(MAGIC.len())
            .cast::<u64>();
        // SAFETY: the mapping is page-aligned and longer than HEADER, so `at` is an
        // aligned u64 inside it, written only through this `&mut self`.
        let field = unsafe { AtomicU64::from_ptr(at) };
        field.store((len as u64).to_le(), Ordering::Release);
    }
}
