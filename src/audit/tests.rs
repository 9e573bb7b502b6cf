use std::path::Path;
use std::sync::Arc;

use super::*;

fn keys() -> Arc<AuditKeys> {
    Arc::new(AuditKeys::from_seed(&[1u8; 32]))
}

fn options() -> LogOptions {
    LogOptions {
        instance: "test".into(),
        segment_bytes: 3000,
        checkpoint_every: 7,
        durability: Durability::Group,
    }
}

fn record(i: u64) -> Record {
    Record {
        kind: Some(Kind::Statement),
        session: Some(i % 3),
        user: Some(format!("user{}", i % 4).into()),
        role: Some("clinician".into()),
        statement: Some("SELECT * FROM patients WHERE ssn = $1".into()),
        decision: Some(Decision::Allowed),
        ..Record::default()
    }
}

/// A closed log of `n` records in several segments.
fn write_log(dir: &Path, keys: Arc<AuditKeys>, n: u64) {
    let mut log = AuditLog::open(dir, keys, options()).expect("open");
    for i in 0..n {
        log.append(record(i), i % 3 == 0).expect("append");
    }
    log.close().expect("close");
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().expect("tempdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.path().join(e.file_name())).expect("copy");
    }
    to
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .expect("write");
}

fn segment(dir: &Path, i: usize) -> std::path::PathBuf {
    store::segments(dir).expect("segments")[i].clone()
}

fn check_both(dir: &Path) -> (Result<Report, Problem>, Result<Report, Problem>) {
    let k = keys();
    (
        verify(dir, &k.public(), Some(&k)),
        verify(dir, &k.public(), None),
    )
}

#[test]
fn a_clean_log_verifies_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), keys(), 60);
    let (full, public) = check_both(dir.path());
    let report = full.expect("verifies");
    assert_eq!(report.records, 60);
    assert!(report.segments >= 3, "{report:?}");
    assert_eq!(report.unsigned_tail, 0);
    assert_eq!(public.expect("verifies with the public key"), report);
}

#[test]
fn every_kind_of_tampering_is_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), keys(), 60);
    type Tamper = fn(&Path);
    let cases: [(&str, &str, &str, Tamper); 7] = [
        (
            "one changed byte",
            "mac does not match",
            "digest does not match",
            |d| {
                let f = segment(d, 1);
                let mut l = lines_of(&f);
                l[2] = l[2].replacen("user", "usfr", 1);
                write_lines(&f, &l);
            },
        ),
        ("a deleted record", "found seq", "found seq", |d| {
            let f = segment(d, 1);
            let mut l = lines_of(&f);
            l.remove(3);
            write_lines(&f, &l);
        }),
        ("an inserted record", "found seq", "found seq", |d| {
            let f = segment(d, 1);
            let mut l = lines_of(&f);
            let copy = l[1].clone();
            l.insert(2, copy);
            write_lines(&f, &l);
        }),
        ("two records swapped", "found seq", "found seq", |d| {
            let f = segment(d, 0);
            let mut l = lines_of(&f);
            l.swap(1, 2);
            write_lines(&f, &l);
        }),
        ("a truncated tail", "HEAD", "HEAD", |d| {
            let segs = store::segments(d).expect("segments");
            let f = segs.last().expect("a segment");
            let mut l = lines_of(f);
            let last_checkpoint = l
                .iter()
                .rposition(|x| x.contains("\"checkpoint\""))
                .expect("cp");
            l.truncate(last_checkpoint);
            write_lines(f, &l);
        }),
        ("a removed segment", "missing", "missing", |d| {
            std::fs::remove_file(segment(d, 1)).expect("remove");
        }),
        (
            "a segment re-signed with another key",
            "mac does not match",
            "signature",
            |d| {
                let forged = tempfile::tempdir().expect("tempdir");
                write_log(
                    forged.path(),
                    Arc::new(AuditKeys::from_seed(&[2u8; 32])),
                    60,
                );
                for seg in store::segments(d).expect("segments") {
                    std::fs::remove_file(seg).expect("remove");
                }
                for seg in store::segments(forged.path()).expect("segments") {
                    std::fs::copy(&seg, d.join(seg.file_name().expect("name"))).expect("copy");
                }
                std::fs::copy(forged.path().join("HEAD"), d.join("HEAD")).expect("head");
            },
        ),
    ];
    for (name, with_keys, with_public_key, tamper) in cases {
        let copy = copy_dir(dir.path());
        tamper(copy.path());
        let (full, public) = check_both(copy.path());
        let full = full.expect_err(name);
        let public = public.expect_err(name);
        assert!(full.seq.is_some(), "{name}: {full}");
        assert!(full.what.contains(with_keys), "{name}: {full}");
        assert!(public.what.contains(with_public_key), "{name}: {public}");
    }
}

#[test]
fn the_chain_continues_after_a_restart_and_a_torn_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut log = AuditLog::open(dir.path(), keys(), options()).expect("open");
        for i in 0..10 {
            log.append(record(i), i % 3 == 0).expect("append");
        }
        // dropped without a final checkpoint: a crash
    }
    let last = store::segments(dir.path())
        .expect("segments")
        .pop()
        .expect("one");
    let mut text = std::fs::read_to_string(&last).expect("read");
    text.push_str("{\"seq\":11,\"ts\":\"torn");
    std::fs::write(&last, text).expect("write");
    let complete: usize = store::segments(dir.path())
        .expect("segments")
        .iter()
        .map(|s| lines_of(s).len())
        .sum();
    let mut log = AuditLog::open(dir.path(), keys(), options()).expect("reopen");
    // The torn line is gone (its record was never acknowledged); the chain goes on.
    assert_eq!(log.next_seq(), complete as u64);
    for i in 0..30 {
        log.append(record(i), i % 3 == 0).expect("append");
    }
    log.close().expect("close");
    let (full, public) = check_both(dir.path());
    assert_eq!(full.expect("verifies").records, 40);
    public.expect("verifies");
    // A tampered chain is not continued.
    let f = segment(dir.path(), 0);
    let mut l = lines_of(&f);
    l[0] = l[0].replacen("user0", "user9", 1);
    write_lines(&f, &l);
    let seg_count = store::segments(dir.path()).expect("segments").len();
    if seg_count == 1 {
        assert!(AuditLog::open(dir.path(), keys(), options()).is_err());
    }
}

#[test]
fn value_hashes_are_keyed_and_stable() {
    let a = AuditKeys::from_seed(&[1u8; 32]);
    let b = AuditKeys::from_seed(&[2u8; 32]);
    assert_eq!(a.value_hash(b"999-12-3456"), a.value_hash(b"999-12-3456"));
    assert_ne!(a.value_hash(b"999-12-3456"), a.value_hash(b"999-12-3457"));
    assert_ne!(a.value_hash(b"999-12-3456"), b.value_hash(b"999-12-3456"));
    assert!(!format!("{a:?}").contains("chain"));
}

#[test]
fn key_files_are_created_private_and_refused_when_readable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("secrets/audit.ed25519");
    let k = AuditKeys::load_or_create(&path).expect("create");
    let again = AuditKeys::load_or_create(&path).expect("load");
    assert_eq!(k.public(), again.public());
    let public = PublicKey::load(&keys::public_path(&path)).expect("public key");
    assert_eq!(public, k.public());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(AuditKeys::load_or_create(&path).is_err());
}

/// Sessions on several threads append at once while segments rotate and checkpoints are
/// written (and the syncer syncs): every append succeeds and the chain verifies.
#[test]
fn concurrent_appends_across_rotations_keep_one_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("audit.ed25519");
    let auditor = Auditor::open(
        &dir.path().join("log"),
        &key,
        options(),
        std::time::Duration::from_millis(1),
    )
    .expect("open");
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let auditor = &auditor;
            s.spawn(move || {
                for i in 0..500 {
                    auditor
                        .append(record(t * 1000 + i), i % 2 == 0)
                        .expect("append");
                }
            });
        }
    });
    let public = AuditKeys::load(&key).expect("key").public();
    let report = verify(&dir.path().join("log"), &public, None).expect("verifies");
    assert_eq!(report.records, 2000, "{report:?}");
}

/// A log whose gated lines are staged, as the auditor keeps it.
fn staged_log(dir: &Path) -> AuditLog {
    let mut log = AuditLog::open(dir, keys(), options()).expect("open");
    log.stage_gated().expect("staging");
    log
}

fn seqs(dir: &Path) -> Vec<u64> {
    read_all(dir).expect("read").iter().map(|r| r.seq).collect()
}

#[test]
fn staged_records_survive_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = staged_log(dir.path());
    for i in 0..4 {
        log.append(record(i), true).expect("gated");
    }
    log.append(record(4), false).expect("buffered");
    // staged, not written: the segment holds none of them yet
    assert!(lines_of(&segment(dir.path(), 0)).is_empty());
    drop(log); // a crash: nothing more is written
    let log = AuditLog::open(dir.path(), keys(), options()).expect("reopen");
    assert_eq!(log.next_seq(), 5, "the gated records were taken in");
    log.close().expect("close");
    // the buffered record after the last gated one was never acknowledged: lost
    assert_eq!(seqs(dir.path()), [1, 2, 3, 4, 5]);
    let (full, public) = check_both(dir.path());
    assert_eq!(full.expect("verifies").records, 4);
    public.expect("verifies");
}

#[test]
fn staged_records_already_written_are_not_taken_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let staged = dir.path().join("staged");
    let mut log = staged_log(dir.path());
    for i in 0..3 {
        log.append(record(i), true).expect("gated");
    }
    let before_clear = std::fs::read(&staged).expect("read");
    log.write_out().expect("write");
    assert_eq!(lines_of(&segment(dir.path(), 0)).len(), 3);
    drop(log);
    // as if the crash came between the write and the staging file's clearing
    std::fs::write(&staged, before_clear).expect("write");
    let mut log = staged_log(dir.path());
    log.append(record(3), true).expect("gated");
    log.close().expect("close");
    assert_eq!(seqs(dir.path()), [1, 2, 3, 4, 5]);
    check_both(dir.path()).0.expect("verifies");
}

#[test]
fn staged_records_that_do_not_continue_the_log_are_refused() {
    let other = tempfile::tempdir().expect("tempdir");
    let mut log = staged_log(other.path());
    for i in 0..3 {
        log.append(record(i), true).expect("gated");
    }
    drop(log);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = AuditLog::open(dir.path(), keys(), options()).expect("open");
    log.append(record(7), true).expect("append");
    drop(log);
    std::fs::copy(other.path().join("staged"), dir.path().join("staged")).expect("copy");
    let e = AuditLog::open(dir.path(), keys(), options()).expect_err("refused");
    let e = e.to_string();
    assert!(e.contains("staged line 2 (seq 2) does not continue"), "{e}");
    assert!(e.contains("move the file away"), "{e}");
}

#[test]
fn a_staged_log_writes_out_on_its_own_past_its_buffer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = AuditLog::open(
        dir.path(),
        keys(),
        LogOptions {
            segment_bytes: 1 << 30,
            checkpoint_every: 1 << 30,
            ..options()
        },
    )
    .expect("open");
    log.stage_gated().expect("staging");
    for i in 0..1000 {
        log.append(record(i), true).expect("gated");
    }
    // the buffer was written out whenever it passed its bound; the rest is staged
    let written = lines_of(&segment(dir.path(), 0)).len();
    assert!((500..1000).contains(&written), "{written}");
    log.close().expect("close");
    assert_eq!(seqs(dir.path()).len(), 1001);
    check_both(dir.path()).0.expect("verifies");
}

#[test]
fn a_log_open_in_one_place_is_refused_in_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = AuditLog::open(dir.path(), keys(), options()).expect("open");
    let e = AuditLog::open(dir.path(), keys(), options()).expect_err("second");
    assert!(e.to_string().contains("its own audit.dir"), "{e}");
    drop(log);
    AuditLog::open(dir.path(), keys(), options()).expect("free again");
}

#[test]
fn a_failed_write_keeps_what_was_staged_and_drops_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = staged_log(dir.path());
    log.append(record(0), true).expect("staged");
    log.append(record(1), false).expect("buffered, not staged");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    log.write_to(Some(full));
    // the syncer's write fails: the staged record stays, the buffered one goes
    log.write_out().expect_err("the disk is full");
    assert_eq!(log.next_seq(), 2);
    // a statement now is written, not staged, and refused when that fails
    log.append(record(2), true).expect_err("refused");
    assert_eq!(log.next_seq(), 2);
    log.write_to(None);
    log.append(record(3), true).expect("written");
    log.close().expect("close");
    let all = read_all(dir.path()).expect("read");
    let users: Vec<_> = all.iter().filter_map(|r| r.user.as_deref()).collect();
    assert_eq!(users, ["user0", "user3"]);
    assert_eq!(seqs(dir.path()), [1, 2, 3]);
    check_both(dir.path()).0.expect("verifies");
}

/// The syncer's write outside the log's lock.
mod flight;

/// The syncer's sleep while the log is idle.
mod syncer;
