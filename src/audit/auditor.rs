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
    /// where records are counted, once the server has its metrics
    metrics: std::sync::OnceLock<(prometheus::IntCounter, prometheus::Histogram)>,
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
        // The log itself never syncs per record: the auditor shares syncs.
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
            metrics: std::sync::OnceLock::new(),
        })
    }

    fn log(&self) -> std::sync::MutexGuard<'_, AuditLog> {
        // A panic while holding the lock cannot leave a half-written line (see append).
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a record and returns its seq. With `gate` (a statement waits for it), it
    /// returns once the record is written as the durability mode requires: handed to the
    /// operating system (`group`) or on disk (`fsync`, sharing syncs with concurrent
    /// sessions). Without, the record may wait in memory for the next flush (a few
    /// milliseconds).
    pub fn record(&self, record: Record, gate: bool) -> Result<u64, AuditError> {
        let started = std::time::Instant::now();
        let seq = self.log().append(record, gate)?;
        if gate && self.durability == Durability::Fsync {
            self.sync_through(seq)?;
        }
        if let Some((records, seconds)) = self.metrics.get() {
            records.inc();
            seconds.observe(started.elapsed().as_secs_f64());
        }
        Ok(seq)
    }

    /// Reports every record written from now on to `records` and the time each took
    /// (including its sync in `fsync` mode) to `seconds`.
    pub fn report_to(&self, records: prometheus::IntCounter, seconds: prometheus::Histogram) {
        let _ = self.metrics.set((records, seconds));
    }

    /// Makes sure `seq` is on disk; one sync covers everything written before it.
    fn sync_through(&self, seq: u64) -> Result<(), AuditError> {
        let _leader = self.sync.lock().unwrap_or_else(|p| p.into_inner());
        if self.synced.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        self.sync_out(AuditLog::write_out)
    }

    /// Under the log's lock, `prepare` (flush, checkpoint); then, outside it, the sync of
    /// what the log has written. The caller holds the sync lock.
    fn sync_out(
        &self,
        prepare: impl FnOnce(&mut AuditLog) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        let job = {
            let mut log = self.log();
            prepare(&mut log)?;
            log.sync_job()?
        };
        if let Some(job) = job {
            let through = job.through;
            job.run()?;
            self.synced.fetch_max(through, Ordering::AcqRel);
        }
        Ok(())
    }

    /// The keyed hash a value is recorded under.
    pub fn value_hash(&self, value: &[u8]) -> String {
        self.keys.value_hash(value)
    }

    /// A final checkpoint, synced (at shutdown).
    pub fn close(&self) -> Result<(), AuditError> {
        let _leader = self.sync.lock().unwrap_or_else(|p| p.into_inner());
        self.sync_out(AuditLog::checkpoint)
    }

    /// Periodic work (every few milliseconds): a checkpoint when one is due, buffered
    /// records written out, and a sync, which runs outside the log's lock so appends
    /// never wait for the disk.
    pub fn tick(&self) -> Result<(), AuditError> {
        let _leader = self.sync.lock().unwrap_or_else(|p| p.into_inner());
        self.sync_out(|log| log.tick(self.checkpoint_interval))
    }
}
