//! `phigate audit verify`: walks every segment and reports the first line that breaks the
//! chain. With the public key alone it checks sequence numbers, links, and each
//! checkpoint's digest and signature (so any edit up to the last checkpoint is found);
//! with the secret keys it also checks every record's MAC (so edits after the last
//! checkpoint are found too).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::chain::{checkpoint_message, line_hash, split_mac};
use super::keys::{AuditKeys, PublicKey};
use super::record::Kind;
use super::store::{LineInfo, parse_line, segments};
use super::unhex;

/// What a successful verification covered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// segment files
    pub segments: usize,
    /// records (checkpoints not included)
    pub records: u64,
    /// checkpoints
    pub checkpoints: u64,
    /// the last seq
    pub last_seq: u64,
    /// records after the last checkpoint: protected by their MACs only
    pub unsigned_tail: u64,
}

/// The first thing wrong with the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// the seq where the chain breaks, when known
    pub seq: Option<u64>,
    /// the segment
    pub file: PathBuf,
    /// the line (1-based; 0 for the file as a whole)
    pub line: usize,
    /// what is wrong
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "seq {seq}: ")?,
            None => write!(f, "")?,
        }
        write!(
            f,
            "{} (file {}, line {})",
            self.what,
            self.file.display(),
            self.line
        )
    }
}

/// Verifies the log in `dir` against `public` (and, given `keys`, every record's MAC).
pub fn verify(dir: &Path, public: &PublicKey, keys: Option<&AuditKeys>) -> Result<Report, Problem> {
    let files = segments(dir).map_err(|e| problem(None, dir, 0, e.to_string()))?;
    let head = std::fs::read_to_string(dir.join("HEAD")).ok();
    let mut v = Verifier {
        public,
        keys,
        head_seq: head
            .as_deref()
            .and_then(|h| parse_line(h.trim_end()))
            .map(|i| i.seq),
        head: head.as_deref().map(str::trim_end).map(str::to_owned),
        head_seen: false,
        report: Report {
            segments: files.len(),
            ..Report::default()
        },
        expected: 1,
        prev: [0u8; 32],
    };
    for (index, file) in files.iter().enumerate() {
        v.segment(file, index + 1 == files.len())?;
    }
    v.report.last_seq = v.expected - 1;
    if let Some(seq) = v.head_seq
        && !v.head_seen
    {
        let file = files.last().cloned().unwrap_or_else(|| dir.to_owned());
        return Err(problem(
            Some(v.expected),
            &file,
            0,
            format!(
                "the log ends at seq {} but HEAD records a checkpoint at seq {seq} (truncated)",
                v.expected - 1
            ),
        ));
    }
    Ok(v.report)
}

fn problem(seq: Option<u64>, file: &Path, line: usize, what: String) -> Problem {
    Problem {
        seq,
        file: file.to_owned(),
        line,
        what,
    }
}

/// The walk over the segments: where the chain is.
struct Verifier<'a> {
    public: &'a PublicKey,
    keys: Option<&'a AuditKeys>,
    head: Option<String>,
    head_seq: Option<u64>,
    head_seen: bool,
    report: Report,
    /// the seq the next line must have
    expected: u64,
    /// the previous line's mac
    prev: [u8; 32],
}

/// The records since the segment's last checkpoint.
struct Pending {
    hasher: Sha256,
    first: u64,
    count: u64,
}

impl Verifier<'_> {
    /// One segment file; `last` when it is the newest.
    fn segment(&mut self, file: &Path, last: bool) -> Result<(), Problem> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| problem(Some(self.expected), file, 0, format!("unreadable: {e}")))?;
        let named = file
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok());
        if named != Some(self.expected) {
            let expected = self.expected;
            return Err(problem(
                Some(expected),
                file,
                0,
                format!(
                    "segment expected to start at seq {expected} (a segment is missing or renamed)"
                ),
            ));
        }
        if !text.is_empty() && !text.ends_with('\n') {
            let lines = text.lines().count();
            return Err(problem(
                None,
                file,
                lines,
                "the last line is incomplete".into(),
            ));
        }
        let mut hasher = Sha256::new();
        hasher.update([0u8; 32]);
        let mut pending = Pending {
            hasher,
            first: self.expected,
            count: 0,
        };
        let mut last_kind = None;
        for (i, line) in text.lines().enumerate() {
            last_kind = self
                .line(line, &mut pending)
                .map_err(|what| problem(Some(self.expected), file, i + 1, what))?;
        }
        if !last && last_kind != Some(Kind::Checkpoint) {
            return Err(problem(
                Some(self.expected),
                file,
                text.lines().count(),
                "a closed segment does not end with a checkpoint (truncated)".into(),
            ));
        }
        if last {
            self.report.unsigned_tail = pending.count;
        }
        Ok(())
    }

    /// One line: its place in the chain, its mac, and a checkpoint's signature. Returns
    /// its kind.
    fn line(&mut self, line: &str, pending: &mut Pending) -> Result<Option<Kind>, String> {
        let (body, mac) = split_mac(line).ok_or("the line has no well-formed mac")?;
        let info = parse_line(line).ok_or("the line is not a well-formed record")?;
        if info.seq != self.expected {
            return Err(format!(
                "found seq {} (records deleted, inserted or reordered)",
                info.seq
            ));
        }
        if info.prev != hex::encode(self.prev) {
            return Err(
                "prev does not match the previous line's mac (a line was removed or altered)"
                    .into(),
            );
        }
        let hash = line_hash(body.as_bytes());
        if let Some(k) = self.keys
            && k.mac(&self.prev, &hash) != mac
        {
            return Err("the mac does not match: the line was altered".into());
        }
        if info.kind == Some(Kind::Checkpoint) {
            self.checkpoint(&info, pending)?;
        } else {
            pending.hasher.update(hash);
            pending.count += 1;
            self.report.records += 1;
        }
        if self.head_seq == Some(info.seq) {
            self.head_seen = self.head.as_deref() == Some(line);
            if !self.head_seen {
                return Err("the line differs from the checkpoint recorded in HEAD".into());
            }
        }
        self.prev = mac;
        self.expected += 1;
        Ok(info.kind)
    }

    /// A checkpoint: what it covers, its digest and its signature.
    fn checkpoint(&mut self, info: &LineInfo, pending: &mut Pending) -> Result<(), String> {
        let digest: [u8; 32] = pending.hasher.clone().finalize().into();
        let covers = [pending.first, self.expected - 1, pending.count];
        if info.covers != Some(covers) {
            return Err(format!(
                "the checkpoint covers {:?} but the segment holds {covers:?}",
                info.covers
            ));
        }
        if info.digest.as_deref().and_then(unhex::<32>) != Some(digest) {
            return Err("the checkpoint's digest does not match the records it covers (a record was altered)".into());
        }
        let message = checkpoint_message(covers, &self.prev, &digest);
        if !info
            .signature
            .as_deref()
            .is_some_and(|s| self.public.verifies(&message, s))
        {
            return Err("the checkpoint's signature does not verify with this public key".into());
        }
        self.report.checkpoints += 1;
        pending.hasher = Sha256::new();
        pending.hasher.update(digest);
        pending.first = self.expected + 1;
        pending.count = 0;
        Ok(())
    }
}
