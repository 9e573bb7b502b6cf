//! The staging file: where a gated record reaches the operating system before its
//! statement is forwarded, without a system call.
//!
//! A session's gated record must be in the OS (a crash of phigate loses nothing) before
//! its statement goes upstream. Writing it to the segment costs a `write` per statement;
//! mapping the segment itself costs a page fault per new page (measured slower, see
//! docs/NOTES.md). The staging file is small, allocated once and mapped: the log copies
//! its unwritten lines into it (pages already mapped and writable, so no fault and no
//! system call), and the syncer writes them to the segment with one `write` per tick.
//!
//! The file holds two regions, each a header (magic, length of its staged lines) and
//! those lines, used in turn: while the syncer writes the lines of one to the segment
//! (outside the log's lock), sessions stage theirs in the other; a region goes back to
//! zero length once its lines are in the segment. At open, lines a crash left in either
//! region are taken into the log first, in seq order (see `AuditLog::open`); a file of
//! the earlier layout, one region, is read the same way. The file also carries the
//! log's lock: one process per log ([`lock`]).

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
const MAGIC: &[u8; 8] = b"phgstg02";
/// The earlier layout's magic: one region.
const MAGIC_ONE: &[u8; 8] = b"phgstg01";
/// A region's magic and the length of its staged lines (little-endian u64).
const HEADER: usize = 16;
/// Room for staged lines in a region; more than the log buffers before it writes on its
/// own.
const CAPACITY: usize = 256 << 10;
/// A region, header included.
const REGION: usize = HEADER + CAPACITY;

/// The mapped staging file of an open log.
#[derive(Debug)]
pub(super) struct Staging {
    map: MmapMut,
    /// the region new lines are staged in
    active: usize,
    /// bytes at the start of the log's buffer held in the other region (after a failed
    /// write of them, see [`Staging::take_back`]); the active region mirrors the rest
    base: usize,
    /// bytes of the log's buffer after `base` mirrored in the active region
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
/// `dir`), both regions', empty when none: they may or may not have reached the segment
/// before that run ended (a crash between a write and the emptying of its region leaves
/// lines in the segment too). The caller orders them by seq and skips those it has.
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
    let regions = match bytes.get(..MAGIC.len()) {
        Some(m) if m == MAGIC => 2,
        Some(m) if m == MAGIC_ONE => 1,
        _ => {
            return Err(AuditError::Corrupt {
                path,
                problem: "not a staging file; move it away if it is not phigate's".into(),
            });
        }
    };
    let mut lines = Vec::new();
    for region in bytes.chunks(REGION).take(regions) {
        lines.extend_from_slice(staged_lines(region));
    }
    Ok(lines)
}

/// The lines a region holds (all of them, with their newlines), as its header says.
fn staged_lines(region: &[u8]) -> &[u8] {
    let Some(header) = region.get(..HEADER) else {
        return &[];
    };
    let mut len = [0u8; 8];
    len.copy_from_slice(&header[8..]);
    let len = usize::try_from(u64::from_le_bytes(len)).unwrap_or(usize::MAX);
    let end = HEADER.saturating_add(len).min(region.len());
    region.get(HEADER..end).unwrap_or_default()
}

impl Staging {
    /// The locked staging `file` (see [`lock`]; in `dir`) emptied, its blocks written
    /// once (so a write into the mapping never needs disk space), and mapped.
    pub(super) fn create(file: &File, dir: &Path) -> Result<Self, AuditError> {
        let path = dir.join(FILE);
        let mut blank = vec![0u8; 2 * REGION];
        for region in blank.chunks_mut(REGION) {
            region[..MAGIC.len()].copy_from_slice(MAGIC);
        }
        file.set_len(0)
            .and_then(|()| file.write_all_at(&blank, 0))
            .and_then(|()| file.sync_all())
            .map_err(io(&path))?;
        // SAFETY: the file is the log's own (mode 0600 in its 0700 directory) and keeps
        // its length while mapped; only this mapping writes to it while the log is open.
        let map = unsafe { MmapMut::map_mut(file) }.map_err(io(&path))?;
        Ok(Self {
            map,
            active: 0,
            base: 0,
            used: 0,
        })
    }

    /// Bytes at the start of the log's buffer already staged.
    pub(super) fn used(&self) -> usize {
        self.base + self.used
    }

    /// Mirrors `buf`, whose first [`Staging::used`] bytes are already staged. False, with
    /// nothing changed, when it does not fit.
    pub(super) fn stage(&mut self, buf: &[u8]) -> bool {
        let start = self.active * REGION + HEADER;
        let (Some(new), Some(room)) = (
            buf.get(self.base + self.used..),
            buf.len()
                .checked_sub(self.base)
                .filter(|&len| len <= CAPACITY)
                .and_then(|len| self.map.get_mut(start + self.used..start + len)),
        ) else {
            return false;
        };
        room.copy_from_slice(new);
        self.used = buf.len() - self.base;
        self.set_len(self.active, self.used);
        true
    }

    /// The buffer, all of it staged, is being written to the segment and leaves the log's
    /// buffer: its region is kept as it is until [`Staging::written`] (or
    /// [`Staging::take_back`]), and lines are staged in the other region from now on.
    /// Only with the other region empty (no write in flight, none failed).
    pub(super) fn hand_over(&mut self) {
        self.active = 1 - self.active;
        self.base = 0;
        self.used = 0;
    }

    /// The lines handed over are in the segment: their region is emptied.
    pub(super) fn written(&mut self) {
        self.set_len(1 - self.active, 0);
    }

    /// The write of the `len` bytes handed over failed: they are back at the start of the
    /// log's buffer, still staged in their region.
    pub(super) fn take_back(&mut self, len: usize) {
        self.base = len;
    }

    /// Everything staged is in the segment now.
    pub(super) fn clear(&mut self) {
        if self.used() > 0 {
            self.set_len(1 - self.active, 0);
            self.set_len(self.active, 0);
            self.base = 0;
            self.used = 0;
        }
    }

    /// Publishes the staged length of `region`: its lines reach the mapping before their
    /// length does.
    fn set_len(&mut self, region: usize, len: usize) {
        let at = self
            .map
            .as_mut_ptr()
            .wrapping_add(region * REGION + MAGIC.len())
            .cast::<u64>();
        // SAFETY: the mapping is page-aligned and two regions long, and a region's size
        // is a multiple of 8, so `at` is an aligned u64 inside it, written only through
        // this `&mut self`.
        let field = unsafe { AtomicU64::from_ptr(at) };
        field.store((len as u64).to_le(), Ordering::Release);
    }
}
