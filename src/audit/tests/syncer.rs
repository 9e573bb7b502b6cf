//! The syncer asleep while the log is idle: an append wakes it, so does a checkpoint
//! falling due, and dropping the auditor ends it.

use std::time::{Duration, Instant};

use super::*;

fn open(dir: &Path, checkpoint_interval: Duration) -> Arc<Auditor> {
    open_with(dir, checkpoint_interval, Durability::Group)
}

fn open_with(dir: &Path, checkpoint_interval: Duration, durability: Durability) -> Arc<Auditor> {
    let opts = LogOptions {
        segment_bytes: 1 << 30,
        checkpoint_every: 1 << 30,
        durability,
        ..options()
    };
    let key = dir.join("audit.ed25519");
    Auditor::open(&dir.join("log"), &key, opts, checkpoint_interval).expect("open")
}

/// Polls `done` every millisecond, failing with `what` after 10 s.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < until, "{what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn an_idle_syncer_sleeps_until_an_append_wakes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    // the next checkpoint is due in an hour: only an append can wake the syncer
    let auditor = open(dir.path(), Duration::from_secs(3600));
    for i in 0..3 {
        let seq = auditor.append(record(i), false).expect("append");
        eventually("the record is synced", || auditor.synced_through() >= seq);
        eventually("the syncer sleeps", || auditor.wakeup().asleep());
    }
}

#[test]
fn a_gated_record_in_fsync_mode_wakes_a_sleeping_syncer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auditor = open_with(dir.path(), Duration::from_secs(3600), Durability::Fsync);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for i in 0..3 {
        eventually("the syncer sleeps", || auditor.wakeup().asleep());
        let recorded = auditor.record(record(i), true);
        let seq = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), recorded).await })
            .expect("synced in time")
            .expect("synced");
        assert!(auditor.synced_through() >= seq);
    }
}

#[test]
fn a_sleeping_syncer_wakes_when_a_checkpoint_falls_due() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auditor = open(dir.path(), Duration::from_millis(100));
    let seq = auditor.append(record(0), false).expect("append");
    eventually("a checkpoint follows the record", || {
        auditor.synced_through() > seq
    });
    eventually("the syncer sleeps", || auditor.wakeup().asleep());
}

#[test]
fn dropping_the_auditor_ends_its_sleeping_syncer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auditor = open(dir.path(), Duration::from_secs(3600));
    let wakeup = auditor.wakeup().clone();
    eventually("the syncer sleeps", || wakeup.asleep());
    drop(auditor);
    // the syncer's own handle on the wakeup goes with its thread
    eventually("the syncer ended", || Arc::strong_count(&wakeup) == 1);
}
