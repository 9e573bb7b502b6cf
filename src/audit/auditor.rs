//! The audit log shared by every session of an instance.
//!
//! Records are appended under a lock, which assigns their place in the chain; appending
//! never syncs, and a gated record reaches the OS through the log's mapped staging file,
//! without a system call. Syncs happen on one background thread, the syncer (see
//! [`super::syncer`]): every few milliseconds while records wait (`group` durability: a
//! checkpoint when due, buffered and staged records written out, a sync), and at once
//! when a session waits for its record to reach the disk (`fsync` durability). One sync
//! covers every record written before it (group commit), and a waiting session waits as a
//! future ([`Auditor::durable`]), so the thread it runs on keeps serving the others.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use super::AuditError;
use super::keys::AuditKeys;
use super::record::{Record, Unsealed};
use super::store::{AuditLog, Durability, LogOptions};
use super::syncer::{self, Rest, Wakeup};

/// What the syncer has done, as sessions waiting for a sync see it.
#[derive(Debug, Clone, Copy, Default)]
struct Synced {
    /// the highest seq known to be on disk
    through: u64,
    /// the highest seq whose sync failed
    failed: u64,
}

/// The instance's audit log, shared by sessions.
#[derive(Debug)]
pub struct Auditor {
    /// held only to seal and stage, never across the syncer's write (see
    /// [`AuditLog::take_for_write`]); std's lock spins briefly without a system call
    /// before it sleeps (parking_lot's, tried before, yields to the scheduler while it
    /// spins: half a `sched_yield` per statement under load, measured slower)
    log: Mutex<AuditLog>,
    /// signalled (with `log`) when the syncer's write lands: an append that needs the
    /// segment meanwhile waits for it
    landed: Condvar,
    /// the instance name records carry
    instance: String,
    keys: Arc<AuditKeys>,
    durability: Durability,
    checkpoint_interval: Duration,
    synced: watch::Sender<Synced>,
    /// what wakes the syncer
    wakeup: Arc<Wakeup>,
    /// serialises syncs
    sync: Mutex<()>,
    /// syncs are held (see [`Auditor::hold_syncs`])
    held: AtomicBool,
    /// where records are counted, once the server has its metrics
    metrics: std::sync::OnceLock<(prometheus::IntCounter, prometheus::Histogram)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock cannot leave a half-written line (see AuditLog::append).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Auditor {
    /// Opens the log in `dir` with the key in `key_file` (created when absent) and starts
    /// its syncer thread, which ends once the auditor is dropped.
    pub fn open(
        dir: &Path,
        key_file: &Path,
        opts: LogOptions,
        checkpoint_interval: Duration,
    ) -> Result<Arc<Self>, AuditError> {
        let keys = Arc::new(AuditKeys::load_or_create(key_file)?);
        let durability = opts.durability;
        let instance = opts.instance.clone();
        // The log itself never syncs per record: the syncer shares syncs.
        let mut log = AuditLog::open(
            dir,
            keys.clone(),
            LogOptions {
                durability: Durability::Group,
                ..opts
            },
        )?;
        // gated records are staged, and the syncer's tick writes them out; where the
        // staging file cannot be made, each is written (slower, as safe)
        if let Err(e) = log.stage_gated() {
            tracing::warn!(error = %e, "audit staging file unavailable: records are written one by one");
        }
        let through = log.next_seq().saturating_sub(1);
        let auditor = Arc::new(Self {
            log: Mutex::new(log),
            landed: Condvar::new(),
            instance,
            keys,
            durability,
            checkpoint_interval,
            synced: watch::Sender::new(Synced { through, failed: 0 }),
            wakeup: Arc::default(),
            sync: Mutex::new(()),
            held: AtomicBool::new(false),
            metrics: std::sync::OnceLock::new(),
        });
        syncer::spawn(Arc::downgrade(&auditor), auditor.wakeup.clone()).map_err(super::io(dir))?;
        Ok(auditor)
    }

    /// Appends a record and returns its seq. With `gate` (a statement waits for it), the
    /// record and everything before it is handed to the operating system (staged) before
    /// this returns; without, it may wait in memory for the syncer (a few milliseconds). In
    /// `fsync` mode, a gated record counts as written only once `Auditor::durable`
    /// says so.
    pub fn append(&self, record: Record, gate: bool) -> Result<u64, AuditError> {
        // only a gated record is timed: the metric is the time a statement waits
        let started = gate.then(std::time::Instant::now);
        // everything but the chain's part is done before taking the lock
        let unsealed = Unsealed::new(&record, &self.instance);
        let appended = self.append_unsealed(&unsealed, gate);
        // even a failed append may leave staged lines in the buffer for the syncer
        self.wakeup.appended();
        let seq = appended?;
        if let Some((records, seconds)) = self.metrics.get() {
            records.inc();
            if let Some(started) = started {
                seconds.observe(started.elapsed().as_secs_f64());
            }
        }
        Ok(seq)
    }

    /// Appends under the log's lock. The syncer's write does not hold it: only a record
    /// that needs the segment (a rotation, a gated record that cannot be staged) waits
    /// for that write to land.
    fn append_unsealed(&self, unsealed: &Unsealed, gate: bool) -> Result<u64, AuditError> {
        let log = lock(&self.log);
        let mut log = self.wait_landed(log, |l| l.rotation_due(unsealed));
        let (seq, settled) = log.append_unsealed(unsealed, gate)?;
        if !settled {
            let rewinds = log.rewinds();
            self.wait_landed(log, |_| true).settle_late(gate, rewinds)?;
        }
        Ok(seq)
    }

    /// Waits, when `needs_segment` says so, for the syncer's write in flight to land.
    fn wait_landed<'a>(
        &self,
        log: MutexGuard<'a, AuditLog>,
        mut needs_segment: impl FnMut(&AuditLog) -> bool,
    ) -> MutexGuard<'a, AuditLog> {
        self.landed
            .wait_while(log, |l| l.writing() && needs_segment(l))
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The seq of the last record appended (0 when none).
    pub(crate) fn last_seq(&self) -> u64 {
        lock(&self.log).next_seq().saturating_sub(1)
    }

    /// True when a gated record must wait for [`Auditor::durable`] (`fsync` mode).
    pub(crate) fn syncs_each_statement(&self) -> bool {
        self.durability == Durability::Fsync
    }

    /// Resolves once `seq` is on disk: the syncer is woken, and one sync covers every
    /// session waiting at the time. Only the awaiting task waits, never its thread.
    pub(crate) fn durable(&self, seq: u64) -> impl Future<Output = Result<(), AuditError>> + use<> {
        let mut rx = self.synced.subscribe();
        self.wakeup.want(seq);
        async move {
            let state = rx
                .wait_for(|s| s.through >= seq || s.failed >= seq)
                .await
                .map(|s| *s)
                .unwrap_or_default();
            if state.through >= seq {
                Ok(())
            } else {
                Err(AuditError::Io {
                    path: "audit log".into(),
                    cause: std::io::Error::other("the sync of the audit log failed"),
                })
            }
        }
    }

    /// Appends a record and, when `gate` in `fsync` mode, waits for it to reach the disk.
    pub async fn record(&self, record: Record, gate: bool) -> Result<u64, AuditError> {
        let seq = self.append(record, gate)?;
        if gate && self.syncs_each_statement() {
            self.durable(seq).await?;
        }
        Ok(seq)
    }

    /// Reports every record written from now on to `records` and the time each append
    /// took to `seconds`.
    pub(crate) fn report_to(
        &self,
        records: prometheus::IntCounter,
        seconds: prometheus::Histogram,
    ) {
        let _ = self.metrics.set((records, seconds));
    }

    /// The keys records are sealed and values hashed with.
    pub fn keys(&self) -> &Arc<AuditKeys> {
        &self.keys
    }

    /// The keyed hash a value is recorded under.
    pub fn value_hash(&self, value: &[u8]) -> String {
        self.keys.value_hash(value)
    }

    /// Holds every sync while `held` is true, as a stalled disk would (for tests and
    /// maintenance); records are still appended.
    pub fn hold_syncs(&self, held: bool) {
        self.held.store(held, Ordering::Release);
        self.wakeup.nudge();
    }

    /// True while syncs are held (see [`Auditor::hold_syncs`]).
    pub(super) fn syncs_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// What wakes the syncer.
    #[cfg(test)]
    pub(super) fn wakeup(&self) -> &Arc<Wakeup> {
        &self.wakeup
    }

    /// The highest seq known to be on disk.
    #[cfg(test)]
    pub(super) fn synced_through(&self) -> u64 {
        self.synced.borrow().through
    }

    /// The highest seq whose sync is done, or has failed: a session waiting for a later
    /// one wakes the syncer (a failed one does not keep it spinning).
    pub(super) fn settled_through(&self) -> u64 {
        let s = self.synced.borrow();
        s.through.max(s.failed)
    }

    /// Whether the syncer may sleep until the next append, and for how long at most.
    pub(super) fn rest(&self) -> Rest {
        let log = lock(&self.log);
        if !log.idle() {
            return Rest::Busy;
        }
        Rest::Until(log.checkpoint_due_in(self.checkpoint_interval))
    }

    /// A final checkpoint, synced (at shutdown).
    pub fn close(&self) -> Result<(), AuditError> {
        let _leader = lock(&self.sync);
        self.sync_out(AuditLog::checkpoint)
    }

    /// The syncer's periodic work: a checkpoint when one is due, buffered records written
    /// out, and a sync. The write and the sync run outside the log's lock, so appends
    /// never wait for the disk. A failed write or sync is reported to every session
    /// waiting for it.
    pub(super) fn tick(&self) -> Result<(), AuditError> {
        let _leader = lock(&self.sync);
        let result = self.write_taken().and_then(|()| self.sync_out(|_| Ok(())));
        if result.is_err() {
            let written = self.last_seq();
            self.synced
                .send_modify(|s| s.failed = s.failed.max(written));
        }
        result
    }

    /// Takes the buffered lines under the log's lock (a checkpoint first when due), writes
    /// them outside it, and records the result under it again, waking appends that waited
    /// for the segment. The caller holds the sync lock.
    fn write_taken(&self) -> Result<(), AuditError> {
        let flight = {
            let mut log = lock(&self.log);
            log.checkpoint_if_due(self.checkpoint_interval)?;
            log.take_for_write()?
        };
        let Some(flight) = flight else {
            return Ok(());
        };
        let written = flight.write();
        let landed = lock(&self.log).land(flight, written);
        self.landed.notify_all();
        landed
    }

    /// Under the log's lock, `prepare` (flush, checkpoint); then, outside it, the sync of
    /// what the log has written. The caller holds the sync lock.
    fn sync_out(
        &self,
        prepare: impl FnOnce(&mut AuditLog) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        let job = {
            let mut log = lock(&self.log);
            prepare(&mut log)?;
            log.sync_job()?
        };
        if let Some(job) = job {
            let through = job.through;
            job.run()?;
            self.synced
                .send_modify(|s| s.through = s.through.max(through));
        }
        Ok(())
    }
}

impl Drop for Auditor {
    fn drop(&mut self) {
        self.wakeup.close();
    }
}
