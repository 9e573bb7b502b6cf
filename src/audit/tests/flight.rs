//! A write of the syncer's in flight (taken under the log's lock, written outside it):
//! appends meanwhile, a crash before it lands, a failed one, and the staging file's
//! earlier layout.

use super::*;

fn full() -> std::fs::File {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full")
}

/// What the syncer does with a flight once it has released the log's lock.
fn write_and_land(log: &mut AuditLog, flight: store::flight::Flight) -> Result<(), AuditError> {
    let written = flight.write();
    log.land(flight, written)
}

#[test]
fn appends_while_a_write_is_in_flight_are_staged_and_land_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = staged_log(dir.path());
    log.append(record(0), true).expect("gated");
    log.append(record(1), false).expect("buffered");
    let flight = log.take_for_write().expect("take").expect("lines to write");
    assert!(log.writing());
    // the segment is the flight's: a gated record is staged, a buffered one waits
    let unsealed = record::Unsealed::new(&record(2), "test");
    assert_eq!(
        log.append_unsealed(&unsealed, true).expect("staged"),
        (3, true)
    );
    log.append(record(3), false).expect("buffered");
    assert!(lines_of(&segment(dir.path(), 0)).is_empty());
    write_and_land(&mut log, flight).expect("landed");
    assert!(!log.writing());
    assert_eq!(lines_of(&segment(dir.path(), 0)).len(), 2);
    log.close().expect("close");
    assert_eq!(seqs(dir.path()), [1, 2, 3, 4, 5]);
    check_both(dir.path()).0.expect("verifies");
}

#[test]
fn a_crash_before_a_write_lands_loses_no_gated_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = staged_log(dir.path());
    log.append(record(0), true).expect("gated");
    log.append(record(1), false).expect("buffered");
    let flight = log.take_for_write().expect("take").expect("lines to write");
    log.append(record(2), true)
        .expect("gated, in the other region");
    log.append(record(3), false)
        .expect("buffered, never acknowledged");
    // the crash: the flight never reaches the segment
    drop(flight);
    drop(log);
    let log = AuditLog::open(dir.path(), keys(), options()).expect("reopen");
    // both regions were read, in seq order: the flight's lines (all staged when it was
    // taken) and the gated record after it
    assert_eq!(log.next_seq(), 4);
    log.close().expect("close");
    let all = read_all(dir.path()).expect("read");
    let users: Vec<_> = all.iter().filter_map(|r| r.user.as_deref()).collect();
    assert_eq!(users, ["user0", "user1", "user2"]);
    check_both(dir.path()).0.expect("verifies");
}

#[test]
fn regions_are_used_in_turn_and_read_back_in_seq_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = staged_log(dir.path());
    log.append(record(0), true).expect("gated");
    let flight = log.take_for_write().expect("take").expect("lines to write");
    write_and_land(&mut log, flight).expect("landed");
    // the second region now takes new lines, and is the next to be written
    log.append(record(1), true).expect("gated");
    let flight = log.take_for_write().expect("take").expect("lines to write");
    log.append(record(2), true)
        .expect("gated, in the first region again");
    // the crash: the first region's line is newer than the second's
    drop(flight);
    drop(log);
    let log = AuditLog::open(dir.path(), keys(), options()).expect("reopen");
    assert_eq!(log.next_seq(), 4);
    log.close().expect("close");
    assert_eq!(seqs(dir.path()), [1, 2, 3, 4]);
    check_both(dir.path()).0.expect("verifies");
}

#[test]
fn a_crash_after_a_write_lands_but_before_its_region_empties_takes_nothing_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let staged = dir.path().join("staged");
    let mut log = staged_log(dir.path());
    for i in 0..3 {
        log.append(record(i), true).expect("gated");
    }
    let flight = log.take_for_write().expect("take").expect("lines to write");
    log.append(record(3), true)
        .expect("gated, in the other region");
    flight.write().expect("written");
    // the staging file as it was between the write and the landing
    let before_landing = std::fs::read(&staged).expect("read");
    drop(flight);
    drop(log);
    std::fs::write(&staged, before_landing).expect("write");
    let log = AuditLog::open(dir.path(), keys(), options()).expect("reopen");
    assert_eq!(log.next_seq(), 5);
    log.close().expect("close");
    assert_eq!(seqs(dir.path()), [1, 2, 3, 4, 5]);
    check_both(dir.path()).0.expect("verifies");
}

#[test]
fn a_failed_write_in_flight_keeps_what_was_staged_and_drops_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = staged_log(dir.path());
    log.append(record(0), true).expect("gated");
    log.append(record(1), false).expect("buffered");
    log.write_to(Some(full()));
    let flight = log.take_for_write().expect("take").expect("lines to write");
    log.append(record(2), true)
        .expect("gated, in the other region");
    log.append(record(3), false).expect("buffered, not staged");
    write_and_land(&mut log, flight).expect_err("the disk is full");
    // the flight's lines (staged when taken) and the gated record stay; the last goes
    assert_eq!(log.next_seq(), 4);
    assert_eq!(log.rewinds(), 1);
    // a statement now is written, not staged, and refused when that fails
    log.append(record(4), true).expect_err("refused");
    log.write_to(None);
    log.append(record(5), true).expect("written");
    log.close().expect("close");
    let all = read_all(dir.path()).expect("read");
    let users: Vec<_> = all.iter().filter_map(|r| r.user.as_deref()).collect();
    assert_eq!(users, ["user0", "user1", "user2", "user1"]);
    assert_eq!(seqs(dir.path()), [1, 2, 3, 4, 5]);
    check_both(dir.path()).0.expect("verifies");
}

#[test]
fn lines_staged_in_the_earlier_one_region_layout_are_taken_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let staged = dir.path().join("staged");
    let mut log = staged_log(dir.path());
    for i in 0..3 {
        log.append(record(i), true).expect("gated");
    }
    drop(log);
    // the first region, as the earlier layout wrote it: its magic, length and lines
    let mut bytes = std::fs::read(&staged).expect("read");
    let len = u64::from_le_bytes(bytes[8..16].try_into().expect("length"));
    bytes.truncate(16 + usize::try_from(len).expect("fits"));
    bytes[..8].copy_from_slice(b"phgstg01");
    std::fs::write(&staged, bytes).expect("write");
    let log = AuditLog::open(dir.path(), keys(), options()).expect("reopen");
    assert_eq!(log.next_seq(), 4);
    log.close().expect("close");
    check_both(dir.path()).0.expect("verifies");
}

/// Appends gated records during a flight until one cannot be staged (its region full);
/// its seq and the rewinds count at that point.
fn fill_region(log: &mut AuditLog) -> (u64, u64) {
    for i in 0.. {
        let unsealed = record::Unsealed::new(&record(i), "test");
        let rewinds = log.rewinds();
        if let (seq, false) = log.append_unsealed(&unsealed, true).expect("appended") {
            return (seq, rewinds);
        }
    }
    unreachable!("the region fills")
}

fn roomy_options() -> LogOptions {
    LogOptions {
        segment_bytes: 1 << 30,
        checkpoint_every: 1 << 30,
        ..options()
    }
}

#[test]
fn a_gated_record_that_finds_its_region_full_is_written_once_the_flight_lands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = AuditLog::open(dir.path(), keys(), roomy_options()).expect("open");
    log.stage_gated().expect("staging");
    log.append(record(0), true).expect("gated");
    let flight = log.take_for_write().expect("take").expect("lines to write");
    let (seq, rewinds) = fill_region(&mut log);
    write_and_land(&mut log, flight).expect("landed");
    log.settle_late(true, rewinds).expect("written now");
    assert_eq!(log.next_seq(), seq + 1);
    assert_eq!(lines_of(&segment(dir.path(), 0)).len() as u64, seq);
    log.close().expect("close");
    check_both(dir.path()).0.expect("verifies");
}

#[test]
fn a_gated_record_that_finds_its_region_full_is_refused_when_the_flight_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = AuditLog::open(dir.path(), keys(), roomy_options()).expect("open");
    log.stage_gated().expect("staging");
    log.append(record(0), true).expect("gated");
    log.write_to(Some(full()));
    let flight = log.take_for_write().expect("take").expect("lines to write");
    let (seq, rewinds) = fill_region(&mut log);
    write_and_land(&mut log, flight).expect_err("the disk is full");
    // the record that was not staged went with the failed write: its statement is refused
    assert_eq!(log.next_seq(), seq);
    log.write_to(None);
    log.settle_late(true, rewinds).expect_err("refused");
    log.close().expect("close");
    assert_eq!(seqs(dir.path()).len() as u64, seq);
    check_both(dir.path()).0.expect("verifies");
}
