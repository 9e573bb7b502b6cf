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
use super::store::{parse_line, segments};
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
    let problem = |seq: Option<u64>, file: &Path, line: usize, what: String| Problem {
        seq,
        file: file.to_owned(),
        line,
        what,
    };
    let files = segments(dir).map_err(|e| problem(None, dir, 0, e.to_string()))?;
    let head = std::fs::read_to_string(dir.join("HEAD")).ok();
    let head_seq = head
        .as_deref()
        .and_then(|h| parse_line(h.trim_end()))
        .map(|i| i.seq);
    let mut head_seen = false;
    let mut report = Report {
        segments: files.len(),
        ..Report::default()
    };
    let mut expected = 1u64;
    let mut prev = [0u8; 32];
    for (index, file) in files.iter().enumerate() {
        let text = std::fs::read_to_string(file)
            .map_err(|e| problem(Some(expected), file, 0, format!("unreadable: {e}")))?;
        let named = file
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok());
        if named != Some(expected) {
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
            return Err(problem(
                None,
                file,
                text.lines().count(),
                "the last line is incomplete".into(),
            ));
        }
        let mut hasher = Sha256::new();
        hasher.update([0u8; 32]);
        let mut first = expected;
        let mut count = 0u64;
        let mut last_kind = None;
        for (i, line) in text.lines().enumerate() {
            let at = |what: String| problem(Some(expected), file, i + 1, what);
            let (body, mac) =
                split_mac(line).ok_or_else(|| at("the line has no well-formed mac".into()))?;
            let info = parse_line(line)
                .ok_or_else(|| at("the line is not a well-formed record".into()))?;
            if info.seq != expected {
                return Err(at(format!(
                    "found seq {} (records deleted, inserted or reordered)",
                    info.seq
                )));
            }
            if info.prev != hex::encode(prev) {
                return Err(at(
                    "prev does not match the previous line's mac (a line was removed or altered)"
                        .into(),
                ));
            }
            let hash = line_hash(&body);
            if let Some(k) = keys
                && k.mac(&prev, &hash) != mac
            {
                return Err(at("the mac does not match: the line was altered".into()));
            }
            if info.kind == Some(Kind::Checkpoint) {
                let digest: [u8; 32] = hasher.clone().finalize().into();
                let covers = [first, expected - 1, count];
                if info.covers != Some(covers) {
                    return Err(at(format!(
                        "the checkpoint covers {:?} but the segment holds {covers:?}",
                        info.covers
                    )));
                }
                if info.digest.as_deref().and_then(unhex::<32>) != Some(digest) {
                    return Err(at("the checkpoint's digest does not match the records it covers (a record was altered)".into()));
                }
                let message = checkpoint_message(covers, &prev, &digest);
                if !info
                    .signature
                    .as_deref()
                    .is_some_and(|s| public.verifies(&message, s))
                {
                    return Err(at(
                        "the checkpoint's signature does not verify with this public key".into(),
                    ));
                }
                report.checkpoints += 1;
                hasher = Sha256::new();
                hasher.update(digest);
                first = expected + 1;
                count = 0;
            } else {
                hasher.update(hash);
                count += 1;
                report.records += 1;
            }
            if head_seq == Some(info.seq) {
                head_seen = head.as_deref().map(str::trim_end) == Some(line);
                if !head_seen {
                    return Err(at(
                        "the line differs from the checkpoint recorded in HEAD".into()
                    ));
                }
            }
            last_kind = info.kind;
            prev = mac;
            expected += 1;
        }
        let last_segment = index + 1 == files.len();
        if !last_segment && last_kind != Some(Kind::Checkpoint) {
            return Err(problem(
                Some(expected),
                file,
                text.lines().count(),
                "a closed segment does not end with a checkpoint (truncated)".into(),
            ));
        }
        if last_segment {
            report.unsigned_tail = count;
        }
    }
    report.last_seq = expected - 1;
    if let Some(seq) = head_seq
        && !head_seen
    {
        let file = files.last().cloned().unwrap_or_else(|| dir.to_owned());
        return Err(problem(
            Some(expected),
            &file,
            0,
            format!(
                "the log ends at seq {} but HEAD records a checkpoint at seq {seq} (truncated)",
                expected - 1
            ),
        ));
    }
    Ok(report)
}
