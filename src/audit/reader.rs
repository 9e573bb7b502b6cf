//! Reading the lines appended to an audit directory after a given seq, across segment
//! rotations, as they are written: what a sink that streams the log (`server::syslog`)
//! reads from. A line is taken only once complete (its newline written).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::record::Record;
use super::store::segments;
use super::{AuditError, io};

/// At most this much of a segment is read at once.
const READ_AT_ONCE: u64 = 1 << 20;

/// Where a reader stands: after which seq, and in which segment at which offset.
#[derive(Debug)]
pub struct Reader {
    dir: PathBuf,
    after: u64,
    at: Option<(PathBuf, u64)>,
}

/// The first seq of a segment, from its name.
fn first_seq(segment: &Path) -> u64 {
    segment
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl Reader {
    /// A reader of the records after seq `after` (0: from the start) in `dir`.
    pub fn new(dir: &Path, after: u64) -> Self {
        Self {
            dir: dir.to_owned(),
            after,
            at: None,
        }
    }

    /// The seq of the last record returned (or the one the reader started after).
    pub fn after(&self) -> u64 {
        self.after
    }

    /// Starts again after seq `after` (a sink resending what may have been lost).
    pub fn rewind(&mut self, after: u64) {
        self.after = after;
        self.at = None;
    }

    /// The next complete lines and their records, oldest first; empty when nothing new
    /// was written yet.
    pub fn next_batch(&mut self) -> Result<Vec<(String, Record)>, AuditError> {
        let segs = segments(&self.dir)?;
        let Some((path, offset)) = self.at.clone().or_else(|| self.start(&segs)) else {
            return Ok(Vec::new());
        };
        let (lines, consumed) = read_lines_at(&path, offset)?;
        let mut out = Vec::new();
        for line in lines {
            let record: Record = serde_json::from_str(&line).map_err(|e| AuditError::Corrupt {
                path: path.clone(),
                problem: format!("a line is not a record: {e}"),
            })?;
            if record.seq > self.after {
                self.after = record.seq;
                out.push((line, record));
            }
        }
        let next = segs.iter().find(|p| **p > path).cloned();
        self.at = match next {
            // a newer segment exists: this one is closed once nothing more is in it
            Some(n) if consumed == 0 => Some((n, 0)),
            _ => Some((path, offset + consumed)),
        };
        Ok(out)
    }

    /// The segment holding the record after `self.after`.
    fn start(&self, segs: &[PathBuf]) -> Option<(PathBuf, u64)> {
        let wanted = self.after + 1;
        let seg = segs
            .iter()
            .rev()
            .find(|s| first_seq(s) <= wanted)
            .or_else(|| segs.first())?;
        Some((seg.clone(), 0))
    }
}

/// The complete lines of `path` from `offset` (at most [`READ_AT_ONCE`] bytes), and how
/// many bytes they take.
fn read_lines_at(path: &Path, offset: u64) -> Result<(Vec<String>, u64), AuditError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    f.seek(SeekFrom::Start(offset)).map_err(io(path))?;
    let mut bytes = Vec::new();
    f.take(READ_AT_ONCE)
        .read_to_end(&mut bytes)
        .map_err(io(path))?;
    let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let text = String::from_utf8_lossy(&bytes[..whole]);
    let lines = text.lines().map(str::to_owned).collect();
    Ok((lines, whole as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditKeys, AuditLog, Durability, Kind, LogOptions};

    #[test]
    fn reads_what_follows_a_seq_across_segments_and_rewinds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = std::sync::Arc::new(AuditKeys::from_seed(&[3u8; 32]));
        let opts = LogOptions {
            instance: "t".into(),
            segment_bytes: 2000,
            checkpoint_every: 5,
            durability: Durability::Group,
        };
        let mut log = AuditLog::open(dir.path(), keys, opts).expect("open");
        let record = || Record {
            kind: Some(Kind::SessionStart),
            user: Some("u".into()),
            ..Record::default()
        };
        for _ in 0..40 {
            log.append(record(), true).expect("append");
        }
        assert!(segments(dir.path()).expect("segments").len() > 2);
        let mut reader = Reader::new(dir.path(), 17);
        let last = log.next_seq() - 1;
        let mut seqs = Vec::new();
        for _ in 0..100 {
            let batch = reader.next_batch().expect("reads");
            seqs.extend(batch.iter().map(|(_, r)| r.seq));
        }
        assert_eq!(seqs, (18..=last).collect::<Vec<_>>());
        // more lines arrive, and are read
        log.append(record(), true).expect("append");
        let more: Vec<u64> = reader
            .next_batch()
            .expect("reads")
            .iter()
            .map(|(_, r)| r.seq)
            .collect();
        assert_eq!(more, [last + 1]);
        reader.rewind(last - 1);
        let again: Vec<u64> = reader
            .next_batch()
            .expect("reads")
            .iter()
            .map(|(_, r)| r.seq)
            .collect();
        assert_eq!(again.first(), Some(&last));
    }
}
