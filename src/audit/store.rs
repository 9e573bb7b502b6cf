//! Segment files: appending records, checkpoints, rotation by size and by day, and
//! recovery after a restart (the chain continues from the last line; a torn last line is
//! cut off; lines left in the staging file are taken in).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::chain::{Chain, line_hash, split_mac};
use super::keys::AuditKeys;
use super::record::{Kind, Record, Unsealed, now};
use super::staging::{self, Staging};
use super::{AuditError, io, unhex};

pub(super) mod flight;

/// When a record counts as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// handed to the operating system (write); fsync in the background
    Group,
    /// on disk (fdatasync) before `append` returns
    Fsync,
}

/// How the log is kept.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// the instance name written into every record
    pub instance: String,
    /// a segment is closed once it reaches this size
    pub segment_bytes: u64,
    /// a checkpoint is written after this many records
    pub checkpoint_every: u64,
    /// when a record counts as written
    pub durability: Durability,
}

/// The audit log of one instance, open for appending.
#[derive(Debug)]
pub struct AuditLog {
    /// the staging file, locked while the log is open (see [`staging::lock`])
    locked: File,
    dir: PathBuf,
    keys: Arc<AuditKeys>,
    opts: LogOptions,
    chain: Chain,
    file: Arc<File>,
    path: PathBuf,
    bytes: u64,
    /// UTC date (YYYY-MM-DD) the segment was started on
    day: String,
    /// when the last checkpoint was written
    last_checkpoint: std::time::Instant,
    /// lines written to the file since the last sync
    dirty: bool,
    /// sealed lines not yet written to the file
    buf: Vec<u8>,
    /// the chain as of the last line written to the file
    written: Chain,
    /// where gated lines go instead of a `write` each (see [`AuditLog::stage_gated`])
    staging: Option<Staging>,
    /// the chain as of the last line staged
    staged: Chain,
    /// the last write failed: gated lines are written, not staged, until one succeeds
    failing: bool,
    /// the syncer is writing lines taken from the buffer, outside the log's lock (see
    /// [`AuditLog::take_for_write`]): the segment is its until they land
    writing: bool,
    /// the buffer of the last write, kept for the next
    spare: Vec<u8>,
    /// how many failed writes dropped buffered lines that were not staged
    rewinds: u64,
    /// a checkpoint to publish in HEAD once synced
    pending_head: Option<(u64, String)>,
    /// the seq of the checkpoint in HEAD: syncs run concurrently (the syncer's, and a
    /// rotation's under the log's lock), and HEAD only moves forward
    published: Arc<std::sync::Mutex<u64>>,
}

/// Buffered lines are written out beyond this size even when nobody waits for them.
const FLUSH_ABOVE: usize = 64 << 10;

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.jsonl")
}

/// The segments of `dir`, oldest first.
pub(super) fn segments(dir: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl") && p.is_file())
        .collect();
    found.sort();
    Ok(found)
}

/// The fields of a line recovery and verification look at.
pub(super) struct LineInfo {
    pub(super) seq: u64,
    pub(super) prev: String,
    pub(super) kind: Option<Kind>,
    pub(super) ts: String,
    pub(super) covers: Option<[u64; 3]>,
    pub(super) digest: Option<String>,
    pub(super) signature: Option<String>,
}

pub(super) fn parse_line(line: &str) -> Option<LineInfo> {
    let r: Record = serde_json::from_str(line).ok()?;
    Some(LineInfo {
        seq: r.seq,
        prev: r.prev,
        kind: r.kind,
        ts: r.ts,
        covers: r.covers,
        digest: r.digest,
        signature: r.signature,
    })
}

/// Checks that `line` continues `chain` (its seq next, its mac on the chain's last one)
/// and takes it in; what is wrong with it otherwise.
fn continue_chain(chain: &mut Chain, keys: &AuditKeys, line: &str) -> Result<LineInfo, String> {
    let info = parse_line(line).ok_or("is not a record")?;
    take_line(chain, keys, line, info)
}

/// [`continue_chain`] of a line already parsed into `info`.
fn take_line(
    chain: &mut Chain,
    keys: &AuditKeys,
    line: &str,
    info: LineInfo,
) -> Result<LineInfo, String> {
    let (body, mac) = split_mac(line).ok_or("has no mac")?;
    let hash = line_hash(body.as_bytes());
    if info.seq != chain.next_seq || keys.mac(&chain.prev, &hash) != mac {
        return Err(format!(
            "(seq {}) does not continue the chain; run `phigate audit verify`",
            info.seq
        ));
    }
    let checkpoint = match info.kind {
        Some(Kind::Checkpoint) => Some(
            info.digest
                .as_deref()
                .and_then(unhex::<32>)
                .ok_or("has no digest")?,
        ),
        _ => None,
    };
    chain.absorb(info.seq, &hash, mac, checkpoint);
    Ok(info)
}

fn today() -> String {
    now().chars().take(10).collect()
}

/// Where appending starts: the current segment, its length and day, and the chain state.
struct Position {
    file: File,
    path: PathBuf,
    bytes: u64,
    day: String,
    chain: Chain,
}

impl Position {
    /// A new log: the first segment, empty.
    fn first(dir: &Path) -> Result<Self, AuditError> {
        let path = dir.join(segment_name(1));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        Ok(Self {
            file,
            path,
            bytes: 0,
            day: today(),
            chain: Chain::new(1, [0u8; 32]),
        })
    }

    /// An existing log: the last segment `last` of `existing`, its torn last line cut off,
    /// every line after its chain's start checked.
    fn resume(existing: &[PathBuf], last: &Path, keys: &AuditKeys) -> Result<Self, AuditError> {
        let mut chain = Chain::new(1, [0u8; 32]);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(last)
            .map_err(io(last))?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io(last))?;
        // A torn last line (a crash mid-write) was never acknowledged: cut it off.
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        if whole < text.len() {
            file.set_len(whole as u64).map_err(io(last))?;
            file.seek(SeekFrom::End(0)).map_err(io(last))?;
            text.truncate(whole);
        }
        let corrupt = |problem: String| AuditError::Corrupt {
            path: last.to_owned(),
            problem,
        };
        // The segment's chain starts after the previous segment's last line.
        if existing.len() > 1 {
            let before = &existing[existing.len() - 2];
            let prev_text = std::fs::read_to_string(before).map_err(io(before))?;
            let line = prev_text.lines().last().unwrap_or_default();
            let (_, mac) =
                split_mac(line).ok_or_else(|| corrupt("the previous segment ends badly".into()))?;
            let info = parse_line(line)
                .ok_or_else(|| corrupt("the previous segment ends badly".into()))?;
            chain = Chain::new(info.seq + 1, mac);
        }
        let mut day = today();
        for (i, line) in text.lines().enumerate() {
            let info = continue_chain(&mut chain, keys, line)
                .map_err(|problem| corrupt(format!("line {} {problem}", i + 1)))?;
            if i == 0 {
                day = info.ts.chars().take(10).collect();
            }
        }
        Ok(Self {
            file,
            path: last.to_owned(),
            bytes: whole as u64,
            day,
            chain,
        })
    }
}

impl AuditLog {
    /// Opens (creating when needed) the log in `dir`, continuing its chain.
    pub fn open(dir: &Path, keys: Arc<AuditKeys>, opts: LogOptions) -> Result<Self, AuditError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        let lock = staging::lock(dir)?;
        let existing = segments(dir)?;
        let at = match existing.last() {
            None => Position::first(dir)?,
            Some(last) => Position::resume(&existing, last, &keys)?,
        };
        let mut log = Self {
            locked: lock,
            dir: dir.to_owned(),
            keys,
            opts,
            file: Arc::new(at.file),
            path: at.path,
            bytes: at.bytes,
            day: at.day,
            last_checkpoint: std::time::Instant::now(),
            dirty: false,
            buf: Vec::new(),
            written: at.chain.clone(),
            staged: at.chain.clone(),
            chain: at.chain,
            staging: None,
            failing: false,
            writing: false,
            spare: Vec::new(),
            rewinds: 0,
            pending_head: None,
            published: Arc::default(),
        };
        log.take_leftover()?;
        Ok(log)
    }

    /// Takes into the segment, synced, the lines a previous run staged and did not write
    /// out (those already in the segment are skipped). Staged lines that do not continue
    /// the chain are refused: records of statements that ran would be missing.
    fn take_leftover(&mut self) -> Result<(), AuditError> {
        let leftover = staging::leftover(&self.locked, &self.dir)?;
        let path = self.dir.join(staging::FILE);
        let corrupt = |problem: String| AuditError::Corrupt {
            path: path.clone(),
            problem: format!(
                "{problem}; the staged records cannot be added to the log (move the file \
                 away to start without them)"
            ),
        };
        let text = std::str::from_utf8(&leftover)
            .map_err(|_| corrupt("staged lines are not UTF-8".into()))?;
        let mut lines = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let info = parse_line(line)
                .ok_or_else(|| corrupt(format!("staged line {} is not a record", i + 1)))?;
            lines.push((info, line));
        }
        // the two regions' lines, in chain order (the newer region may come first)
        lines.sort_by_key(|(info, _)| info.seq);
        for (i, (info, line)) in lines.into_iter().enumerate() {
            let at = |problem| corrupt(format!("staged line {} {problem}", i + 1));
            if info.seq < self.chain.next_seq {
                continue;
            }
            take_line(&mut self.chain, &self.keys, line, info).map_err(at)?;
            self.buf.extend_from_slice(line.as_bytes());
            self.buf.push(b'\n');
        }
        self.sync()
    }

    /// From now on a gated line (and what is buffered before it) is copied into the mapped
    /// staging file instead of being written with a system call; a later flush (the
    /// syncer's tick) writes it to the segment. For a log with a syncer only.
    pub(crate) fn stage_gated(&mut self) -> Result<(), AuditError> {
        self.write_out()?;
        self.staging = Some(Staging::create(&self.locked, &self.dir)?);
        Ok(())
    }

    /// The seq the next record will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.chain.next_seq
    }

    /// Appends a record (its `seq`, `prev`, `instance` and, when empty, `ts` are filled
    /// in) and returns its seq. With `flush`, it (and everything buffered before it) is
    /// handed to the operating system before this returns: staged (see
    /// `AuditLog::stage_gated`) or written; otherwise it may wait in memory for the next
    /// flush. In `fsync` durability mode every flush also syncs.
    pub fn append(&mut self, record: Record, flush: bool) -> Result<u64, AuditError> {
        let unsealed = Unsealed::new(&record, &self.opts.instance);
        // only an auditor's syncer writes outside the lock; a log of its own never waits
        self.append_unsealed(&unsealed, flush).map(|(seq, _)| seq)
    }

    /// [`AuditLog::append`] of a record already written as JSON (see [`Unsealed`]), so
    /// that the caller's lock covers only the chain's part. The seq, and false when the
    /// record is appended but could not be handed to the OS yet: a write of the syncer's
    /// is in flight and the record needs the segment (call [`AuditLog::settle_late`] once
    /// it has landed). The caller makes sure no rotation is due while a write is in flight
    /// (see [`AuditLog::rotation_due`]).
    pub(crate) fn append_unsealed(
        &mut self,
        record: &Unsealed,
        flush: bool,
    ) -> Result<(u64, bool), AuditError> {
        if self.rotation_due(record) {
            self.rotate()?;
        }
        let seq = self.chain.seal(&self.keys, record, &mut self.buf);
        Ok((seq, self.settle(flush)?))
    }

    /// A record of a later day starts a segment (one of an earlier day, made just before
    /// midnight by another session, stays in this one), and so does a full segment.
    pub(crate) fn rotation_due(&self, record: &Unsealed) -> bool {
        self.bytes + self.buf.len() as u64 > 0
            && (self.bytes >= self.opts.segment_bytes || record.day() > self.day.as_str())
    }

    /// Writes or stages what the last append asks: a checkpoint when enough records
    /// wait for one, the buffer past its bound, a gated record. While a write of the
    /// syncer's is in flight only staging is possible, and the rest waits for the next
    /// append or tick; false when a gated record needs the segment meanwhile.
    pub(crate) fn settle(&mut self, flush: bool) -> Result<bool, AuditError> {
        if self.writing {
            return Ok(!flush || self.stage());
        }
        if self.chain.count >= self.opts.checkpoint_every {
            self.checkpoint()?;
        } else if self.buf.len() >= FLUSH_ABOVE {
            self.write_out()?;
        } else if flush {
            self.stage_or_write()?;
        }
        if flush && self.opts.durability == Durability::Fsync {
            self.sync()?;
        }
        Ok(true)
    }

    /// Stages the buffer; false when there is no staging file, it does not fit, or
    /// writes are failing.
    fn stage(&mut self) -> bool {
        let staged = !self.failing
            && self
                .staging
                .as_mut()
                .is_some_and(|staging| staging.stage(&self.buf));
        if staged {
            self.staged = self.chain.clone();
        }
        staged
    }

    /// Hands the buffered lines to the OS: into the staging file when there is one, they
    /// fit and writes succeed, otherwise written to the segment.
    fn stage_or_write(&mut self) -> Result<(), AuditError> {
        if self.stage() {
            return Ok(());
        }
        self.write_out()
    }

    /// Writes the buffered lines to the file. On failure the file is cut back to its last
    /// complete line, and the lines not staged are dropped, the chain returning to the
    /// last line staged or written (staged lines stay: their statements may have run, and
    /// the next flush writes them).
    pub fn write_out(&mut self) -> Result<(), AuditError> {
        debug_assert!(
            !self.writing,
            "the segment is written by one writer at a time"
        );
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = (&*self.file).write_all(&self.buf) {
            self.rewind();
            return Err(io(&self.path)(e));
        }
        self.bytes += self.buf.len() as u64;
        self.buf.clear();
        self.written = self.chain.clone();
        self.dirty = true;
        self.failing = false;
        if let Some(staging) = &mut self.staging {
            staging.clear();
        }
        Ok(())
    }

    /// After a failed write of the buffer: the file cut back to its last complete line,
    /// the lines not staged dropped, the chain back at the last line staged or written,
    /// and gated lines written, not staged, until a write succeeds.
    fn rewind(&mut self) {
        let _ = self.file.set_len(self.bytes);
        let staged = self.staging.as_ref().map_or(0, Staging::used);
        self.chain = if staged > 0 {
            &self.staged
        } else {
            &self.written
        }
        .clone();
        self.buf.truncate(staged);
        self.pending_head = None;
        self.failing = true;
        self.rewinds += 1;
    }

    /// True when nothing waits to be written or synced.
    pub(crate) fn idle(&self) -> bool {
        self.buf.is_empty() && !self.dirty && !self.writing
    }

    /// How long until records will have waited `interval` for a checkpoint; `None` when
    /// none waits for one.
    pub(crate) fn checkpoint_due_in(
        &self,
        interval: std::time::Duration,
    ) -> Option<std::time::Duration> {
        (self.chain.count > 0).then(|| interval.saturating_sub(self.last_checkpoint.elapsed()))
    }

    /// Writes a checkpoint when records have waited longer than `interval` for one.
    pub(crate) fn checkpoint_if_due(
        &mut self,
        interval: std::time::Duration,
    ) -> Result<(), AuditError> {
        if self
            .checkpoint_due_in(interval)
            .is_some_and(|d| d.is_zero())
        {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Writes a signed checkpoint over the records since the last one (if any). `HEAD`
    /// is updated once the checkpoint is synced (see [`AuditLog::sync`]).
    pub fn checkpoint(&mut self) -> Result<(), AuditError> {
        if self.chain.count == 0 {
            return self.write_out();
        }
        let record = Record {
            ts: now(),
            ..Record::default()
        };
        let (seq, line) = self
            .chain
            .checkpoint(&self.keys, record, &self.opts.instance);
        self.buf.extend_from_slice(line.as_bytes());
        self.last_checkpoint = std::time::Instant::now();
        self.write_out()?;
        self.pending_head = Some((seq, line));
        Ok(())
    }

    /// What a sync needs, taken under the lock and used outside it: a handle on the
    /// current segment, the seq it covers, and the checkpoint to publish in `HEAD` once
    /// synced. `None` when nothing is unsynced.
    pub(crate) fn sync_job(&mut self) -> Result<Option<SyncJob>, AuditError> {
        if !self.dirty {
            return Ok(None);
        }
        let file = self.file.clone();
        self.dirty = false;
        Ok(Some(SyncJob {
            file,
            path: self.path.clone(),
            through: self.written.next_seq.saturating_sub(1),
            head: self.pending_head.take().map(|(seq, line)| Head {
                path: self.dir.join("HEAD"),
                seq,
                line,
                published: self.published.clone(),
            }),
        }))
    }

    /// Flushes and syncs now, under the caller's lock.
    pub fn sync(&mut self) -> Result<(), AuditError> {
        self.write_out()?;
        if let Some(job) = self.sync_job()? {
            job.run()?;
        }
        Ok(())
    }

    /// Closes the current segment with a checkpoint and starts the next.
    fn rotate(&mut self) -> Result<(), AuditError> {
        self.checkpoint()?;
        self.sync()?;
        let path = self.dir.join(segment_name(self.chain.next_seq));
        self.file = Arc::new(
            OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(io(&path))?,
        );
        self.path = path;
        self.bytes = 0;
        self.day = today();
        self.chain.new_segment();
        self.written = self.chain.clone();
        Ok(())
    }

    /// Ends the log cleanly: a final checkpoint, synced.
    pub fn close(mut self) -> Result<(), AuditError> {
        self.checkpoint()?;
        self.sync()
    }
}

/// Lines written to the operating system but not yet synced, and the checkpoint to
/// publish once they are.
#[derive(Debug)]
pub(crate) struct SyncJob {
    file: Arc<File>,
    path: PathBuf,
    /// the last seq the sync covers
    pub through: u64,
    head: Option<Head>,
}

/// A checkpoint to publish in `HEAD`.
#[derive(Debug)]
struct Head {
    path: PathBuf,
    seq: u64,
    line: String,
    published: Arc<std::sync::Mutex<u64>>,
}

impl SyncJob {
    /// Syncs the segment, then publishes the checkpoint in `HEAD` (temporary file and
    /// rename, so `HEAD` is always whole).
    pub fn run(self) -> Result<(), AuditError> {
        self.file.sync_data().map_err(io(&self.path))?;
        if let Some(head) = self.head {
            let mut published = head.published.lock().unwrap_or_else(|p| p.into_inner());
            if head.seq > *published {
                let tmp = head.path.with_extension("tmp");
                std::fs::write(&tmp, head.line)
                    .and_then(|()| std::fs::rename(&tmp, &head.path))
                    .map_err(io(&head.path))?;
                *published = head.seq;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
impl AuditLog {
    /// Sends writes to `file` instead of the segment (a test makes them fail with
    /// `/dev/full`), or back to the segment when `None`.
    pub(super) fn write_to(&mut self, file: Option<File>) {
        let file = file.unwrap_or_else(|| {
            OpenOptions::new()
                .append(true)
                .open(&self.path)
                .expect("the segment")
        });
        self.file = Arc::new(file);
    }
}
