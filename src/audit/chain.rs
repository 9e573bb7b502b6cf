//! The chain state: sequence numbers, MAC links and the running digest checkpoints sign.

use sha2::{Digest, Sha256};

use super::keys::AuditKeys;
use std::fmt::Write as _;

use super::record::{Kind, Record, Unsealed};
use super::unhex;

/// Prefix of every signed checkpoint message.
const CHECKPOINT_CONTEXT: &[u8] = b"phigate-audit-checkpoint-v1";

/// The bytes a checkpoint signs: the range it covers, the mac of the last covered line
/// and the digest of the covered lines.
pub(super) fn checkpoint_message(
    covers: [u64; 3],
    last_mac: &[u8; 32],
    digest: &[u8; 32],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_CONTEXT.len() + 24 + 64);
    m.extend_from_slice(CHECKPOINT_CONTEXT);
    for v in covers {
        m.extend_from_slice(&v.to_be_bytes());
    }
    m.extend_from_slice(last_mac);
    m.extend_from_slice(digest);
    m
}

/// SHA-256 of a line without its `mac` field: what the mac and the checkpoint digests
/// cover, so each line is hashed once.
pub(super) fn line_hash(body: &str) -> [u8; 32] {
    Sha256::digest(body.as_bytes()).into()
}

/// Splits a line (without its newline) into the part the mac covers, with the `mac`
/// field removed, and the mac itself.
pub(super) fn split_mac(line: &str) -> Option<(String, [u8; 32])> {
    const FIELD: &str = ",\"mac\":\"";
    let at = line.rfind(FIELD)?;
    let tail = &line[at + FIELD.len()..];
    let mac = unhex::<32>(tail.strip_suffix("\"}")?)?;
    Some((format!("{}}}", &line[..at]), mac))
}

/// Where the chain stands.
#[derive(Debug, Clone)]
pub(super) struct Chain {
    pub(super) next_seq: u64,
    pub(super) prev: [u8; 32],
    /// digest over the previous checkpoint's digest (zeros at a segment start) and the
    /// record lines since
    hasher: Sha256,
    /// seq of the first record since the last checkpoint, and how many
    pub(super) first: u64,
    pub(super) count: u64,
}

impl Chain {
    /// The start of a chain, or of a segment: `next_seq` follows the line whose mac is
    /// `prev`.
    pub(super) fn new(next_seq: u64, prev: [u8; 32]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update([0u8; 32]);
        Self {
            next_seq,
            prev,
            hasher,
            first: next_seq,
            count: 0,
        }
    }

    /// Resets the running digest at a checkpoint whose digest is `digest`.
    pub(super) fn after_checkpoint(&mut self, digest: &[u8; 32]) {
        let mut hasher = Sha256::new();
        hasher.update(digest);
        self.hasher = hasher;
        self.first = self.next_seq;
        self.count = 0;
    }

    /// A segment starts: the digest restarts from zeros (segments verify on their own).
    pub(super) fn new_segment(&mut self) {
        *self = Self::new(self.next_seq, self.prev);
    }

    /// Takes a line read back from a segment into the state (recovery).
    pub(super) fn absorb(
        &mut self,
        seq: u64,
        hash: &[u8; 32],
        mac: [u8; 32],
        checkpoint: Option<[u8; 32]>,
    ) {
        self.next_seq = seq + 1;
        self.prev = mac;
        match checkpoint {
            Some(digest) => self.after_checkpoint(&digest),
            None => self.count_line(hash, seq),
        }
    }

    fn count_line(&mut self, hash: &[u8; 32], seq: u64) {
        self.hasher.update(hash);
        if self.count == 0 {
            self.first = seq;
        }
        self.count += 1;
    }

    /// Numbers, links and MACs a record; returns its seq and line (with the newline).
    pub(super) fn seal(&mut self, keys: &AuditKeys, record: &Unsealed) -> (u64, String) {
        self.seal_line(keys, record, true)
    }

    /// [`Chain::seal`]; a line `counted` enters the next checkpoint's digest.
    fn seal_line(&mut self, keys: &AuditKeys, record: &Unsealed, counted: bool) -> (u64, String) {
        let seq = self.next_seq;
        let mut line = String::with_capacity(record.open.len() + 200);
        line.push_str(&record.open);
        line.push_str(",\"seq\":");
        let _ = write!(line, "{seq}");
        line.push_str(",\"prev\":\"");
        line.push_str(&super::to_hex(&self.prev));
        line.push_str("\"}");
        let hash = line_hash(&line);
        let mac = keys.mac(&self.prev, &hash);
        line.pop();
        line.push_str(",\"mac\":\"");
        line.push_str(&super::to_hex(&mac));
        line.push_str("\"}\n");
        if counted {
            self.count_line(&hash, seq);
        }
        self.prev = mac;
        self.next_seq += 1;
        (seq, line)
    }

    /// A signed checkpoint over the records since the previous one.
    /// `record` holds its time; returns its seq and line.
    pub(super) fn checkpoint(
        &mut self,
        keys: &AuditKeys,
        mut record: Record,
        instance: &str,
    ) -> (u64, String) {
        let digest: [u8; 32] = self.hasher.clone().finalize().into();
        let covers = [self.first, self.next_seq - 1, self.count];
        let message = checkpoint_message(covers, &self.prev, &digest);
        record.kind = Some(Kind::Checkpoint);
        record.covers = Some(covers);
        record.digest = Some(hex::encode(digest));
        record.signature = Some(keys.sign(&message));
        let sealed = self.seal_line(keys, &Unsealed::new(record, instance), false);
        self.after_checkpoint(&digest);
        sealed
    }
}
