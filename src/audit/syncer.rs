//! The syncer thread: every tick (5 ms) while records wait to be written or synced, at
//! once when a session waits for a sync (`fsync` durability), and asleep while the log is
//! idle, until the next append or the next checkpoint due. An idle proxy's syncer does
//! not wake 200 times a second.
//!
//! It holds its `Auditor` only for a tick (bounded); asleep it holds only the [`Wakeup`],
//! so dropping the last `Auditor` ends it at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use super::auditor::Auditor;

/// How often the syncer runs while records wait for it and nobody waits for a sync.
const TICK: Duration = Duration::from_millis(5);

/// Whether the syncer may sleep until the next append (see [`Auditor::rest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rest {
    /// records wait to be written or synced: the next tick
    Busy,
    /// nothing waits: until the next checkpoint is due, if one will be
    Until(Option<Duration>),
}

/// What wakes the syncer, shared by the auditor and its thread.
#[derive(Debug, Default)]
pub(super) struct Wakeup {
    waiting: Mutex<Waiting>,
    cond: Condvar,
    /// the syncer sleeps until the next append: set before it looks at the log, so an
    /// append it did not see finds it set (the log's lock orders the two)
    asleep: AtomicBool,
}

/// What the syncer is woken for.
#[derive(Debug, Default)]
struct Waiting {
    /// the highest seq a session waits to see on disk
    wanted: u64,
    /// a record was appended while the syncer slept
    appended: bool,
    /// the auditor is gone
    closed: bool,
}

impl Wakeup {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session waits for `seq` to reach the disk.
    pub(super) fn want(&self, seq: u64) {
        let mut w = self.lock();
        w.wanted = w.wanted.max(seq);
        self.cond.notify_one();
    }

    /// A record was appended (the log's lock released): wakes the syncer if it sleeps.
    /// One atomic load while it is awake.
    pub(super) fn appended(&self) {
        if self.asleep.load(Ordering::Relaxed) {
            self.lock().appended = true;
            self.cond.notify_one();
        }
    }

    /// Wakes the syncer to look again (syncs held or released).
    pub(super) fn nudge(&self) {
        let _w = self.lock();
        self.cond.notify_one();
    }

    /// The auditor is gone: the syncer ends.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.cond.notify_all();
    }

    /// True while the syncer sleeps until the next append.
    #[cfg(test)]
    pub(super) fn asleep(&self) -> bool {
        self.asleep.load(Ordering::Relaxed)
    }

    /// Waits one tick, or less when a session waits for a sync past `through` (the
    /// highest seq whose sync is done or has failed).
    fn tick_wait(&self, through: u64) {
        let w = self.lock();
        if w.wanted <= through {
            let _ = self.cond.wait_timeout(w, TICK);
        }
    }

    /// Sleeps until an append, a session waiting for a sync past `through`, or `limit`;
    /// false once the auditor is gone.
    fn sleep(&self, through: u64, limit: Option<Duration>) -> bool {
        let mut w = self.lock();
        let woken = |w: &Waiting| w.closed || w.appended || w.wanted > through;
        w = match limit {
            Some(limit) => {
                self.cond
                    .wait_timeout_while(w, limit, |w| !woken(w))
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            None => self
                .cond
                .wait_while(w, |w| !woken(w))
                .unwrap_or_else(|p| p.into_inner()),
        };
        w.appended = false;
        self.asleep.store(false, Ordering::Relaxed);
        !w.closed
    }
}

/// Starts the syncer of `auditor`.
pub(super) fn spawn(auditor: Weak<Auditor>, wakeup: Arc<Wakeup>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("phigate-audit".into())
        .spawn(move || run(&auditor, &wakeup))
        .map(|_| ())
}

/// The syncer's loop; it ends once the auditor is dropped.
fn run(auditor: &Weak<Auditor>, wakeup: &Wakeup) {
    loop {
        let (through, rest) = {
            let Some(a) = auditor.upgrade() else { return };
            wakeup.tick_wait(a.settled_through());
            if a.syncs_held() {
                drop(a);
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            if let Err(e) = a.tick() {
                tracing::error!(error = %e, "audit log sync failed");
            }
            wakeup.asleep.store(true, Ordering::Relaxed);
            (a.settled_through(), a.rest())
        };
        match rest {
            Rest::Busy => wakeup.asleep.store(false, Ordering::Relaxed),
            Rest::Until(limit) => {
                if !wakeup.sleep(through, limit) {
                    return;
                }
            }
        }
    }
}
