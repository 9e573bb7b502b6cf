//! The chain state: sequence numbers, MAC links and the running digest checkpoints sign.

use sha2::{Digest, Sha256};

use super::keys::AuditKeys;

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
pub(super) fn line_hash(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
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
    /// `prev` in hex, as the next line carries it
    prev_hex: [u8; 64],
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
            prev_hex: super::hex32(&prev),
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
        self.link(mac);
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

    /// The line after this one follows the line whose mac is `mac`.
    fn link(&mut self, mac: [u8; 32]) {
        self.prev = mac;
        self.prev_hex = super::hex32(&mac);
    }

    /// Numbers, links and MACs a record, and appends its line (with the newline) to
    /// `out`; returns its seq.
    pub(super) fn seal(&mut self, keys: &AuditKeys, record: &Unsealed, out: &mut Vec<u8>) -> u64 {
        self.seal_line(keys, record, true, out)
    }

    /// [`Chain::seal`]; a line `counted` enters the next checkpoint's digest.
    fn seal_line(
        &mut self,
        keys: &AuditKeys,
        record: &Unsealed,
        counted: bool,
        out: &mut Vec<u8>,
    ) -> u64 {
        let seq = self.next_seq;
        let start = out.len();
        out.extend_from_slice(record.open.as_bytes());
        out.extend_from_slice(b",\"seq\":");
        out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
        out.extend_from_slice(b",\"prev\":\"");
        out.extend_from_slice(&self.prev_hex);
        out.extend_from_slice(b"\"}");
        let hash = line_hash(out.get(start..).unwrap_or_default());
        self.link(keys.mac(&self.prev, &hash));
        // the line's mac, in hex once: linking wrote it as the next line's prev
        out.pop();
        out.extend_from_slice(b",\"mac\":\"");
        out.extend_from_slice(&self.prev_hex);
        out.extend_from_slice(b"\"}\n");
        if counted {
            self.count_line(&hash, seq);
        }
        self.next_seq += 1;
        seq
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
        let mut line = Vec::new();
        let seq = self.seal_line(keys, &Unsealed::new(&record, instance), false, &mut line);
        self.after_checkpoint(&digest);
        (seq, String::from_utf8(line).unwrap_or_default())
    }
}
