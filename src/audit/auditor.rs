//! The audit log shared by every session of an instance. Records are appended under a
//! lock (assigning their place in the chain); in `fsync` mode the appender then waits until
//! a sync covers its record, and one sync covers every record appended before it (group
//! commit: while one session syncs, the others queue behind it and usually find their
//! records already on disk). In `group` mode, [`Auditor::tick`] syncs every few
//! milliseconds.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::AuditError;
use super::keys::AuditKeys;
use super::record::Record;
use super::store::{AuditLog, Durability, LogOptions};

/// The instance's audit log, shared by sessions.
#[derive(Debug)]
pub struct Auditor {
    log: Mutex<AuditLog>,
    keys: Arc<AuditKeys>,
    durability: Durability,
    checkpoint_interval: Duration,
    /// the highest seq known to be on disk
    synced: AtomicU64,
    /// serialises syncs (the group-commit leader holds it)
    sync: Mutex<()>,
}

impl Auditor {
    /// Opens the log in `dir` with the key in `key_file` (created when absent).
    pub fn open(
        dir: &Path,
        key_file: &Path,
        opts: LogOptions,
        checkpoint_interval: Duration,
    ) -> Result<Self, AuditError> {
        let keys = Arc::new(AuditKeys::load_or_create(key_file)?);
        let durability = opts.durability;
        // The log itself never syncs per record: the auditor groups syncs.
        let log = AuditLog::open(
            dir,
            keys.clone(),
            LogOptions {
                durability: Durability::Group,
                ..opts
            },
        )?;
        let synced = AtomicU64::new(log.next_seq().saturating_sub(1));
        Ok(Self {
            log: Mutex::new(log),
            keys,
            durability,
            checkpoint_interval,
            synced,
            sync: Mutex::new(()),
        })
    }

    fn log(&self) -> std::sync::MutexGuard<'_, AuditLog> {
        // A panic while holding the lock cannot leave a half-written line (see append).
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a record; returns its seq once it is written as the durability mode
    /// requires.
    pub fn record(&self, record: Record) -> Result<u64, AuditError> {
        let seq = self.log().append(record)?;
        if self.durability == Durability::Fsync {
            let _leader = self.sync.lock().unwrap_or_else(|p| p.into_inner());
            if self.synced.load(Ordering::Acquire) < seq {
                let mut log = self.log();
                let through = log.next_seq().saturating_sub(1);
                log.sync()?;
                self.synced.fetch_max(through, Ordering::AcqRel);
            }
        }
        Ok(seq)
    }

    /// The keyed hash a value is recorded under.
    pub fn value_hash(&self, value: &[u8]) -> String {
        self.keys.value_hash(value)
    }

    /// Periodic work: a checkpoint when one is due, and a sync of what is unsynced.
    pub fn tick(&self) -> Result<(), AuditError> {
        let mut log = self.log();
        let through = log.next_seq().saturating_sub(1);
        log.tick(self.checkpoint_interval)?;
        self.synced.fetch_max(through, Ordering::AcqRel);
        Ok(())
    }

    /// A final checkpoint, synced (at shutdown).
    pub fn checkpoint(&self) -> Result<(), AuditError> {
        self.log().checkpoint()
    }
}
